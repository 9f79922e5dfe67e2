#!/usr/bin/env python3
"""What each kind of made negative brings to the listening version e: trains e
with the silence negatives only, with every unknown-speech kind but one, and with
all of them (the shipped recipe), and writes each run's figures to
docs/kws_negatives_ablation.json (8-word test accuracy, the kept epoch's validation loss, and the
listening report at the settings each model chose on its validation audio).

Each variant is an ordinary ``kws_train.py --version e`` run with the recipe's
``negatives`` replaced, into a scratch folder (nothing in models/ changes).

Usage: python docs/negatives_ablation.py [--epochs N] [--seed S] [--only NAME,...]
       [--listening-minutes M]
"""
import argparse
import dataclasses
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import kws_train  # noqa: E402
from common import artifacts  # noqa: E402
from common.kws.negatives import Negatives, UNKNOWN_KINDS  # noqa: E402
from variant_run import train_variant  # noqa: E402

VARIANTS = {"all (shipped)": Negatives(),
            "silence only": Negatives(unknown_fraction=0.0, unknown_kinds=()),
            **{f"all but {kind}": Negatives(unknown_kinds=tuple(
                k for k in UNKNOWN_KINDS if k != kind)) for kind in UNKNOWN_KINDS}}
KEYS = ("accuracy", "accuracy_10db", "stream_hit_rate", "stream_fa_per_hour",
        "noise_fa_per_hour", "events_fa_per_hour", "stream_wrong_label_rate",
        "latency_median_ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--listening-minutes", default="60")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()
    out = os.path.join(HERE, "kws_negatives_ablation.json")
    results = json.load(open(out)) if os.path.exists(out) else {}
    names = args.only.split(",") if args.only else list(VARIANTS)
    base = kws_train.RECIPES["e"]
    for name in names:
        recipe = dataclasses.replace(base, negatives=VARIANTS[name])
        report, _ = train_variant("e", recipe, [
            "--seed", str(args.seed), "--data-dir", args.data_dir,
            "--listening-minutes", args.listening_minutes], args.epochs)
        results[name] = {"negatives": dataclasses.asdict(VARIANTS[name]),
                         "epochs": report["recipe"]["epochs"], "seed": args.seed,
                         "best_val_loss": report["fit"]["best_val_loss"],
                         "settings": report["listening"]["settings"],
                         **{k: report["metrics"].get(k) for k in KEYS}}
        print(name, results[name], flush=True)
        artifacts.atomic_write_bytes(out, artifacts.json_bytes(results))


if __name__ == "__main__":
    main()
