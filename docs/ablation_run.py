#!/usr/bin/env python3
"""What each of e's listening ingredients brings: e's recipe with one ingredient taken
away (or more mining), one ``kws_train.py --version e`` run per variant and seed
(docs/variant_run.py), each choosing its detector settings on validation audio and
measured on the test audio as e is. Each run's report and model go into
``KEEP/VARIANT/`` (the models for docs/listening_validation.py); ``--summarize`` gathers
the reports there into docs/kws_ablation.json.

Usage: python docs/ablation_run.py --variant no_mining [--seed 0] [--keep /tmp/kws_ablation]
       python docs/ablation_run.py --summarize [--keep /tmp/kws_ablation]
"""
import argparse
import dataclasses
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import kws_train  # noqa: E402
from common import artifacts  # noqa: E402
from variant_run import train_and_keep  # noqa: E402

E = kws_train.RECIPES["e"]


def without(**changes):
    """e's recipe with its listening negatives changed."""
    return dataclasses.replace(E, negatives=dataclasses.replace(E.negatives, **changes))


VARIANTS = {
    "no_mining": without(mining_rounds=0),
    "no_stream_windows": without(stream_fraction=0.0),  # and so no coverage labels
    "no_soundalikes": without(synth_plan=dataclasses.replace(
        E.negatives.synth_plan, soundalike_share_words=0.0, soundalike_share_phrases=0.0)),
    "two_mining_rounds": without(mining_rounds=2),
    "mining_three_hours": without(mining_minutes=180.0),  # one round, 3x the listening
    "more_synth_keywords": without(synth_keyword_fraction=0.3),  # 3x the synthesized keywords
}
KEPT = ("seed", "recipe", "metrics", "budget", "fit", "listening")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--variant", choices=sorted(VARIANTS))
    what.add_argument("--summarize", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default="/tmp/kws_ablation")
    args = parser.parse_args()
    if args.summarize:
        out = {}
        for path in sorted(glob.glob(os.path.join(args.keep, "*", "seed*.json"))):
            report = json.load(open(path))
            name = os.path.basename(os.path.dirname(path))
            out.setdefault(name, {})[str(report["seed"])] = {k: report[k] for k in KEPT}
        artifacts.atomic_write_bytes(os.path.join(HERE, "kws_ablation.json"),
                                     artifacts.json_bytes(out))
    else:
        keep = os.path.join(args.keep, args.variant)
        report = train_and_keep("e", VARIANTS[args.variant], args.seed, keep)
        artifacts.atomic_write_bytes(os.path.join(keep, f"seed{args.seed}.json"),
                                     artifacts.json_bytes(report))


if __name__ == "__main__":
    main()
