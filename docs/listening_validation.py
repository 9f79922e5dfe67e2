#!/usr/bin/env python3
"""The validation operating point of several keyword-spotter files on the same made
validation audio (the audio and the rule that choose a listening version's detector
settings in training: ``stream.VALIDATION_RECORDINGS``, ``stream.choose_settings``),
each window's features computed once for all the models. Prints and writes, per
model, the chosen settings, whether the false-alarm cap held, and the hits and false
alarms an hour on each validation recording. The test split is never read.

Usage: python docs/listening_validation.py NAME=PATH [NAME=PATH ...]
       [--data-dir data] [--minutes 60] [--out docs/kws_listening_validation.json]
"""
import argparse
import dataclasses
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401
import numpy as np  # noqa: E402

from common import artifacts, cli  # noqa: E402
from common.kws import speech, stream, synth  # noqa: E402


def hop_probabilities(runners, config, signal, hop_s):
    """``[model][hops, labels]``: ``stream.hop_probabilities`` of every runner, the
    features of each window computed once."""
    rows = [[] for _ in runners]
    for features in stream.window_features(config, signal, hop_s):
        for i, runner in enumerate(runners):
            rows[i].append(stream.softmax(runner(features)))
    return [np.array(r, np.float32) for r in rows]


def main():
    from common.tflite.runtime import Runner
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--minutes", type=float, default=stream.DEFAULT_MINUTES)
    parser.add_argument("--out", default=os.path.join(HERE, "kws_listening_validation.json"))
    args = parser.parse_args()
    cli.quiet_libraries(False)
    spotters = {name: stream.read_spotter(path)
                for name, path in (m.split("=", 1) for m in args.models)}
    first = next(iter(spotters.values()))
    if any(s.features != first.features or s.labels != first.labels
           for s in spotters.values()):
        sys.exit("error: the models must share their features and labels")
    corpus = speech.Corpus(args.data_dir, args.data_dir, 0, ("val",), first.labels)
    clips, y = corpus.load(first.features.sample_rate).splits["val"]
    voices = corpus.synthesized("val", synth.heldout_plan(stream.DEFAULT_MINUTES))
    runners = [Runner(s.tflite_bytes) for s in spotters.values()]
    recs, probs = [], {name: {} for name in spotters}
    for i, (name, keywords, fill, share) in enumerate(stream.VALIDATION_RECORDINGS):
        rec = stream.make_recording(name, clips, y, first.features.sample_rate,
                                    (share or 0) * args.minutes * 60,
                                    np.random.default_rng([stream.REPORT_SEED + 1, i]),
                                    keywords, fill == "events",
                                    speech=voices if fill == "speech" else None)
        for model, p in zip(spotters, hop_probabilities(runners, first.features,
                                                        rec.signal, stream.HOP_S)):
            probs[model][name] = p
        recs.append(dataclasses.replace(rec, signal=np.zeros(len(rec.signal), np.int8)))
        print(f"{name}: {rec.seconds / 60:.0f} min", flush=True)
    mask = stream.keyword_mask(first.labels)
    results = {}
    for model in spotters:
        settings, point, held = stream.choose_settings(probs[model], recs, mask)
        results[model] = {"settings": dataclasses.asdict(settings), "cap_held": held,
                          "recordings": point,
                          "det": stream.det_curve(probs[model], recs, settings, mask)}
        print(model, dataclasses.asdict(settings), "cap held" if held else "cap missed",
              {n: (p["hit_rate"], p["false_alarms_per_hour"]) for n, p in point.items()},
              flush=True)
    artifacts.atomic_write_bytes(args.out, artifacts.json_bytes(results))


if __name__ == "__main__":
    main()
