#!/usr/bin/env python3
"""The streaming benchmark of every shipped keyword spotter, through one detector:
writes docs/kws_listening.json (per version: the operating point on each made test
recording, the DET curve, the cost of listening) and draws docs/kws_det.png (hit
rate on the keyword stream against false alarms per hour, over the threshold, one
line per version).

Every model listens to the same audio, made from the test split (stream.REPORT_SEED)
and speech synthesized in the test voices (synth.VOICES); a model that records
detector settings (a listening version) uses them unless --choose, the others get
theirs chosen on validation audio made from the validation split and the validation
voices, by the rule that chose e's (``stream.choose_settings``). The plot needs
matplotlib (requirements-search.txt).

Usage: python docs/listening_benchmark.py [--data-dir data] [--versions a,b,c,d,e]
       [--model NAME=PATH ...] [--choose] [--minutes 60]
       python docs/listening_benchmark.py --run NAME=RUN.json[#KEY] ... --plot PNG
(the second draws the DET that training runs recorded on the same test audio, measuring
nothing)
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401
import numpy as np  # noqa: E402

from common import artifacts, cli  # noqa: E402
from common.kws import speech, stream, synth  # noqa: E402
from common.tflite import micro  # noqa: E402


def benchmark(path, data_dir, split_dir, choose=False, minutes=stream.DEFAULT_MINUTES):
    """``{metrics, details, cost}`` of one model file."""
    from common.tflite.runtime import Runner
    spotter = stream.read_spotter(path)
    corpus = speech.Corpus(data_dir, split_dir, 0, ("val", "test"), spotter.labels)
    clips = corpus.load(spotter.features.sample_rate)
    runner = Runner(spotter.tflite_bytes)
    settings, source, held = spotter.settings, "model metadata", None
    if settings is None or choose:
        settings, _, held = stream.validation_settings(
            runner, spotter.features, spotter.labels, clips.splits["val"], minutes,
            corpus.synthesized("val", synth.heldout_plan(minutes)))
        source = "chosen on validation audio"
    metrics, details = stream.listening_report(
        runner, spotter.features, spotter.labels, clips.splits["test"], settings, minutes,
        corpus.synthesized("test", synth.heldout_plan(minutes)))
    details.update(settings_source=source, validation_cap_held=held)
    cost, memory = stream.listening_cost(spotter.tflite_bytes, spotter.features, settings,
                                         spotter.labels)
    if micro.available():
        device = micro.MicroRunner(spotter.tflite_bytes)
        listener = stream.Listener(device, spotter.features, spotter.labels, settings)
        signal = stream.background(20.0, spotter.features.sample_rate,
                                   np.random.default_rng(0))
        start = time.perf_counter()
        listener.feed(signal)
        cost["tflm_ms_per_hop_host"] = round(1000 * (time.perf_counter() - start)
                                             / listener.hops_done, 3)  # front end too
        memory["arena_bytes"] = device.arena_bytes()
        memory["arena_plus_detector_int16"] = (memory["arena_bytes"]
                                               + memory["audio_ring_int16"]
                                               + memory["score_history"])
    return {"metrics": metrics, "details": details, "cost": cost, "memory": memory,
            "flash_bytes": len(spotter.tflite_bytes)}


def run_report(spec):
    """A training run's JSON: ``PATH``, or ``PATH#KEY`` for one entry of a file that
    gathers several (docs/kws_capacity.json's seeds)."""
    path, _, key = spec.partition("#")
    with open(path) as f:
        report = json.load(f)
    return report[key] if key else report


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for version, result in results.items():
        curve = result["details"]["det"]
        fa = [max(p["fa_per_hour_speech_only"], 0.5) for p in curve]  # 0 at the floor
        listens = result["details"]["background_output"]
        ax.plot(fa, [p["hit_rate"] for p in curve], marker=".", markersize=3,
                label=version + (" (background + unknown outputs)" if listens else ""))
        m = result["metrics"]
        ax.scatter([max(m["speech_fa_per_hour"], 0.5)], [m["stream_hit_rate"]], s=40,
                   edgecolor="k", zorder=3)
    ax.scatter([12], [0.88], marker="*", s=120, color="k",
               label="MLPerf Tiny streaming reference (44/50 at ~12 FA/h)")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour of keyword-free test speech (0 drawn at 0.5)")
    ax.set_ylabel("keywords hit")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("DET over the threshold (dots: the settings chosen on validation)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--split-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--versions", default="a,b,c,d,e",
                        help="shipped models to measure (models/kws_<v>.tflite.zlib)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="also measure this model file under NAME")
    parser.add_argument("--choose", action="store_true",
                        help="choose every model's settings on validation audio, even "
                             "one that records its own")
    parser.add_argument("--minutes", type=float, default=stream.DEFAULT_MINUTES,
                        help="--listening-minutes of the audio (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(HERE, "kws_listening.json"))
    parser.add_argument("--plot", help="the figure (default: docs/kws_det.png; with "
                                       "--run, required)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN.json",
                        help="only draw the listening a training run recorded (its JSON; "
                             "RUN.json#KEY: one entry of a file gathering runs)")
    args = parser.parse_args()
    if args.run and not args.plot:
        parser.error("--run draws a new figure: name it with --plot")
    if args.run:
        runs = {name: run_report(spec) for name, spec in
                (item.split("=", 1) for item in args.run)}
        plot({name: {"details": run["listening"], "metrics": run["metrics"]}
              for name, run in runs.items()}, args.plot)
        return
    cli.quiet_libraries(False)
    out = args.out
    results = json.load(open(out)) if os.path.exists(out) else {}
    models = {v: os.path.join(ROOT, "models", f"kws_{v}.tflite.zlib")
              for v in args.versions.split(",") if v}
    models.update(item.split("=", 1) for item in args.model)
    for version, path in models.items():
        start = time.time()
        results[version] = benchmark(path, args.data_dir, args.split_dir, args.choose,
                                     args.minutes)
        print(version, results[version]["metrics"], results[version]["cost"],
              f"{time.time() - start:.0f} s", flush=True)
        artifacts.atomic_write_bytes(out, artifacts.json_bytes(
            dict(sorted(results.items()))))
    plot(dict(sorted(results.items())), args.plot or os.path.join(HERE, "kws_det.png"))


if __name__ == "__main__":
    main()
