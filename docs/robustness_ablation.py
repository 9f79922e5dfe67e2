#!/usr/bin/env python3
"""What each robustness ingredient of the augmentation brings (issue 18): trains a
version with every ingredient (a wider time shift and the ``speech.Perturbation``
kinds: speaking rate, vocal tract, room, microphone band, tilt, level), with all
but one, and with all of them and the front end's mean removal, and writes each
run's figures to docs/kws_robustness_ablation.json.

The choice is made on VALIDATION figures: the clean accuracy, the 10 dB noise
report and the robustness report's conditions, all on the validation clips (the
same perturbations as the test report's, from the same seed). The test figures of
each run are recorded beside them for docs/robustness.md, never for choosing.

Each variant is an ordinary ``kws_train.py`` run with the recipe's ``augmentation``
(and ``features``) replaced, into a scratch folder (``variant_run.train_variant``;
models/ unchanged). Two processes may run at once (``--only``): the JSON is updated
under a lock.

Usage: python docs/robustness_ablation.py [--version d] [--seed S] [--only NAME,...]
"""
import argparse
import dataclasses
import fcntl
import json
import os
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import kws_train  # noqa: E402
from common import artifacts  # noqa: E402
from common.kws import audio, speech  # noqa: E402
from common.kws.speech import Perturbation  # noqa: E402
from common.kws import reports  # noqa: E402
from common.tflite.runtime import Runner  # noqa: E402
from variant_run import train_variant  # noqa: E402

WIDE_SHIFT_S = kws_train.ROBUST.max_shift_s
NARROW_SHIFT_S = speech.Augmentation().max_shift_s  # the noise-robust copies' own
# name -> the perturbations it adds (the shift is a field of its own)
INGREDIENTS = kws_train.ROBUST_INGREDIENTS


def variant(base, without=None):
    """``base`` augmentation with every ingredient except ``without``."""
    perturbations = kws_train.ingredients(*(name for name in INGREDIENTS
                                            if name != without))
    shift = NARROW_SHIFT_S if without == "shift" else WIDE_SHIFT_S
    return dataclasses.replace(base, max_shift_s=shift, perturbations=perturbations)


LOUDER = Perturbation("level", 0.4, -10.0, 20.0)  # more clipped copies: +20 dB was
#                                                  the worst condition with "all"


def variants(recipe):
    """name -> the version's recipe with that variant's augmentation, on the plain
    features (no mean removal, as when the rows were first run), and the two rows
    that add the front end's mean removal to all the ingredients."""
    plain = dataclasses.replace(recipe.features, remove_mean=False, mean_gate_db=0.0)
    recipe = dataclasses.replace(recipe, features=plain)
    base = recipe.augmentation
    every = variant(base)
    louder = tuple(LOUDER if p.kind == "level" else p for p in every.perturbations)
    augmentations = {"all": every,
                     **{f"all but {name}": variant(base, name)
                        for name in ("shift",) + tuple(INGREDIENTS)},
                     "all with a louder level": dataclasses.replace(every,
                                                                    perturbations=louder)}
    table = {name: dataclasses.replace(recipe, augmentation=augmentation)
             for name, augmentation in augmentations.items()}
    # the front end's per-utterance mean removal (audio.remove_clip_mean): level and
    # a fixed microphone response become a constant the features no longer carry
    mean_removed = dataclasses.replace(recipe.features, remove_mean=True)
    table["all with mean removal"] = dataclasses.replace(table["all"],
                                                         features=mean_removed)
    # the same over the word's loud part (audio.WORD_GATE_DB, 30 dB): zero-filled
    # frames left out
    gated = dataclasses.replace(mean_removed, mean_gate_db=audio.WORD_GATE_DB)
    table["all with gated mean removal"] = dataclasses.replace(table["all"],
                                                               features=gated)
    return table


def validation_figures(tflite_bytes, corpus, recipe):
    """Clean, 10 dB noise and robustness accuracies of the .tflite on validation."""
    runner = Runner(tflite_bytes)
    data = corpus.data(recipe)
    x, y = data.val
    figures = {"accuracy": round(float((runner.predict(x).argmax(1) == y).mean()), 4)}
    noise, _ = reports.noise_report(runner, corpus, recipe, "val")
    robust, _ = reports.robustness_report(runner, corpus, recipe, "val")
    return {**figures, "accuracy_10db": noise["accuracy_10db"], **robust}


def record(path, name, entry):
    lock_path = os.path.join(tempfile.gettempdir(), os.path.basename(path) + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.load(open(path)) if os.path.exists(path) else {}
        results[name] = entry
        artifacts.atomic_write_bytes(path, artifacts.json_bytes(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="d", choices=("a", "b", "c", "d"),
                        help="an 8-keyword version (e's corpus needs its made negatives)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--epochs", type=int, help="fewer epochs (a smoke run)")
    parser.add_argument("--out", default=os.path.join(HERE, "kws_robustness_ablation.json"))
    parser.add_argument("--shipped", action="store_true",
                        help="also measure the shipped models/kws_<version> on validation")
    args = parser.parse_args()
    out = args.out
    base = kws_train.RECIPES[args.version]
    table = variants(base)
    names = args.only.split(",") if args.only else list(table)
    corpus = speech.Corpus(args.data_dir, os.path.join(ROOT, "data"), args.seed,
                           ("val",), None, (), None)
    if args.shipped:
        path = os.path.join(ROOT, "models", f"kws_{args.version}.tflite.zlib")
        report = json.load(open(path.replace(".tflite.zlib", ".json")))
        record(out, f"{args.version} shipped, {report['model_sha256'][:12]}", {
            "version": args.version, "seed": report["seed"],
            "augmentation": report["recipe"]["augmentation"],  # the model's, not today's
            "val": validation_figures(zlib.decompress(open(path, "rb").read()), corpus,
                                      base),
            "test": report["metrics"]})
    for name in names:
        recipe = table[name]
        report, tflite = train_variant(args.version, recipe, [
            "--seed", str(args.seed), "--data-dir", args.data_dir], args.epochs)
        entry = {"version": args.version, "seed": args.seed,
                 "augmentation": dataclasses.asdict(recipe.augmentation),
                 "remove_mean": recipe.features.remove_mean,
                 "mean_gate_db": recipe.features.mean_gate_db,
                 "train_seconds": report["metrics"].get("train_seconds"),
                 "val": validation_figures(tflite, corpus, recipe),
                 "test": {k: v for k, v in report["metrics"].items()
                          if k.startswith(("accuracy", "robust_"))}}
        suffix = f" (seed {args.seed})" if args.seed else ""  # seed 0's keys have none
        record(out, f"{args.version} {name}{suffix}", entry)
        print(name, json.dumps(entry["val"]), flush=True)


if __name__ == "__main__":
    main()
