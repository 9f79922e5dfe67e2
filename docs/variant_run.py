"""One ``kws_train.py`` run of a version with its recipe replaced, into a scratch
folder (nothing in models/ changes): what the ablations in docs/ are made of.

The replaced recipe goes into the task's own recipe table (a copy of
``kws_train.RECIPES``), so nothing global is patched and nothing needs restoring."""
import json
import os
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kws_train  # noqa: E402
from common import artifacts, pipeline  # noqa: E402
from common.kws.task import KeywordSpotting  # noqa: E402

QUICK_LATENCY = ("--latency-runs", "10", "--latency-pause", "0")  # not what is compared


def train_variant(version, recipe, argv, epochs=None):
    """``(report, tflite_bytes)`` of ``kws_train.py --version VERSION --quiet ARGV``
    (and ``--epochs`` when given) with ``recipe`` as the version's recipe."""
    task = KeywordSpotting({**kws_train.RECIPES, version: recipe}, kws_train.__doc__,
                           kws_train.EXAMPLES)
    argv = ["--version", version, "--quiet", *QUICK_LATENCY, *argv]
    if epochs:
        argv += ["--epochs", str(epochs)]
    with tempfile.TemporaryDirectory() as scratch:
        pipeline.main(task, argv + ["--out-dir", scratch])
        stem = os.path.join(scratch, f"kws_{version}")
        with open(stem + ".json") as f:
            report = json.load(f)
        with open(stem + ".tflite.zlib", "rb") as f:
            tflite = zlib.decompress(f.read())
    return report, tflite


def train_and_keep(version, recipe, seed, keep):
    """``train_variant`` with ``--seed SEED``, its model kept as ``KEEP/seedSEED.tflite.zlib``
    (for docs/listening_validation.py); returns the run's report."""
    os.makedirs(keep, exist_ok=True)
    report, tflite = train_variant(version, recipe, ["--seed", str(seed)])
    artifacts.atomic_write_bytes(os.path.join(keep, f"seed{seed}.tflite.zlib"),
                                 artifacts.compress(tflite))
    return report
