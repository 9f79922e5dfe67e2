#!/usr/bin/env python3
"""Does capacity make e's keywords surer? e's recipe and training on a wider, deeper
DS-CNN (76 filters and four depthwise-separable blocks instead of 60 and two) in
microWakeWord's envelope (an ESP32-S3 class part: flash <= 65536 B, arena <= 32768 B),
one ``kws_train.py --version e`` run per seed with the recipe replaced
(docs/variant_run.py), each choosing its detector settings on validation audio and
measured on the test audio as e. Writes docs/kws_capacity.json (per seed: metrics,
budget, fit, the listening report) and keeps each seed's model in ``--keep`` for
docs/listening_validation.py. ``--runs`` summarizes run JSONs already made instead.

Usage: python docs/capacity_run.py [--seeds 0,1,2] [--keep /tmp/kws_capacity]
       python docs/capacity_run.py --runs SEED0.json SEED1.json ...
"""
import argparse
import dataclasses
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import kws_train  # noqa: E402
from common import artifacts  # noqa: E402
from variant_run import train_and_keep  # noqa: E402

WIDER = dataclasses.replace(kws_train.RECIPES["e"], alpha=0.3, blocks=4,
                            max_zlib_bytes=65536, max_flash_bytes=65536,
                            max_arena_bytes=32768)
KEPT = ("seed", "recipe", "metrics", "budget", "fit", "micro", "listening")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--keep", default="/tmp/kws_capacity")
    parser.add_argument("--runs", nargs="+", metavar="RUN.json")
    args = parser.parse_args()
    if args.runs:
        reports = [json.load(open(path)) for path in args.runs]
    else:
        reports = [train_and_keep("e", WIDER, seed, args.keep)
                   for seed in args.seeds.split(",")]
    out = {str(r["seed"]): {key: r[key] for key in KEPT} for r in reports}
    artifacts.atomic_write_bytes(os.path.join(HERE, "kws_capacity.json"),
                                 artifacts.json_bytes(out))


if __name__ == "__main__":
    main()
