"""The keyword spotter's measurements beyond accuracy, each with the lines it prints:
latency of the deployed path, the noise report, the robustness report and the
listening report (the detector on made test audio), and the confusion matrix."""
import statistics
import sys

import numpy as np

from common import cli
from common.errors import UserError
from common.kws import audio, stream, synth

BUDGET_THREADS = 1  # budgets are checked single-threaded, like a small device


def latency(tflite_bytes, config, runs, pause, seed):
    """Latency with 1 thread (the budget's) and with the interpreter's default."""
    from common.tflite.runtime import measure_latency
    rng = np.random.default_rng(seed)

    def microphone():
        return rng.uniform(-1, 1, audio.MIC_RATE).astype(np.float32)

    return {name: measure_latency(tflite_bytes, microphone,
                                  lambda r: audio.from_microphone(config, r),
                                  runs=runs, num_threads=threads, pause_s=pause)
            for name, threads in (("1_thread", BUDGET_THREADS), ("default_threads", None))}


def timing(runner, data, recipe, split, settings):
    """Latency of the deployed path, 1 thread (the budget's) and the default, and
    what listening costs (``stream.listening_cost``)."""
    from common.tflite import tflite_file
    from common.tflite.runtime import host_description
    tflite_bytes = runner.tflite_bytes
    lat = latency(tflite_bytes, recipe.features, settings.latency_runs,
                  settings.latency_pause, settings.seed)
    labels = (tflite_file.read_metadata(tflite_bytes, tflite_file.LABELS) or "").split()
    cost, memory = stream.listening_cost(
        tflite_bytes, recipe.features, stream.recorded_settings(tflite_bytes)
        or stream.DetectorSettings(), labels or None)
    return ({"inference_ms": lat["1_thread"]["inference"]["mean_ms"],
             "total_ms": lat["1_thread"]["total"]["mean_ms"], **cost},
            {"latency": lat, "host": host_description(), "detector_memory": memory})


def noise_report(runner, data, recipe, split, settings=None):
    """The noise report: accuracy with white and pink noise added to every clip at
    20, 10, 5 and 0 dB SNR, drawn from a fixed seed (the same noise for every
    model); ``accuracy_<snr>db`` is the mean of the two colours."""
    from common.kws import noise
    y = data.load(recipe.features.sample_rate).splits[split][1]
    conditions = {}
    for (colour, snr), x in data.noisy_features(recipe.features, split).items():
        predicted = runner.predict(x)
        conditions[f"{colour}_{snr}db"] = round(float(
            (predicted.argmax(axis=1) == y).mean()), 4)
    snrs = sorted({snr for _, snr in noise.REPORT_CONDITIONS}, reverse=True)
    metrics = {f"accuracy_{snr}db": round(statistics.fmean(
        v for k, v in conditions.items() if k.endswith(f"_{snr}db")), 4) for snr in snrs}
    return metrics, {"noise": {"accuracy": conditions, "seed": noise.REPORT_SEED,
                               "clipped_to_full_scale": True}}


def robustness_report(runner, data, recipe, split, settings=None):
    """Accuracy under each of ``robustness.CONDITIONS`` (level, word position,
    room, microphone, speaking rate, vocal tract; fixed seed, the same clips for
    every model): ``robust_<condition>``, and ``robust_worst`` the lowest."""
    from common.kws import robustness
    y = data.load(recipe.features.sample_rate).splits[split][1]
    accuracy = {name: round(float((runner.predict(x).argmax(axis=1) == y).mean()), 4)
                for name, x in data.perturbed_features(recipe.features, split).items()}
    metrics = {f"robust_{name}": value for name, value in accuracy.items()}
    metrics["robust_worst"] = min(accuracy.values())
    return metrics, {"robustness": {
        "accuracy": accuracy, "seed": robustness.REPORT_SEED,
        "conditions": {name: params for name, _, params in robustness.CONDITIONS}}}


def listening_report(runner, data, recipe, split, minutes):
    """The detector on made test audio (``stream.listening_report``) at the
    settings the model records, or chosen on validation audio; none when
    ``minutes`` is 0."""
    if not minutes:
        return {}, {}
    settings, source = stream.recorded_settings(runner.tflite_bytes), "model metadata"
    if settings is None:
        settings = choose_detector(runner.tflite_bytes, data, recipe, minutes)
        source = "chosen on validation audio"
    clips = data.load(recipe.features.sample_rate)
    metrics, details = stream.listening_report(
        runner, recipe.features, data.labels, clips.splits[split], settings, minutes,
        data.synthesized(split, synth.heldout_plan(minutes)))
    details["settings_source"] = source
    return metrics, {"listening": details}


def choose_detector(tflite_bytes, data, recipe, minutes):
    """The detector's settings for a model, chosen on validation audio made from
    the validation split (``stream.validation_settings``); says so in one line when
    no setting kept that audio within the false-alarm cap."""
    from common.tflite.runtime import Runner
    clips = data.load(recipe.features.sample_rate)
    settings, _, held = stream.validation_settings(
        Runner(tflite_bytes), recipe.features, data.labels, clips.splits["val"], minutes,
        data.synthesized("val", synth.heldout_plan(minutes)))
    if not held:
        print(f"note: no detector setting kept the validation audio within "
              f"{stream.VALIDATION_MAX_FA_PER_HOUR:g} false alarm an hour; chose the "
              f"fewest (threshold {settings.threshold:g})", file=sys.stderr)
    return settings


MAX_LISTENING_MINUTES = 120.0  # its 10 hours of keyword-free speech: 2.3 GB of samples


def listening_minutes(args, recipe):
    """--listening-minutes, by default on (an hour) for a listening version only."""
    if args.listening_minutes is not None:
        if args.listening_minutes > MAX_LISTENING_MINUTES:
            raise UserError(f"--listening-minutes {args.listening_minutes:g} is more than "
                            f"{MAX_LISTENING_MINUTES:g}: the report holds 5 x that of "
                            "audio in memory")
        return args.listening_minutes
    return stream.DEFAULT_MINUTES if recipe.negatives else 0.0


def noise_lines(details, data=None):
    """The noise report's table: accuracy per colour and SNR."""
    if "noise" not in details:
        return []
    by_condition = details["noise"]["accuracy"]
    return ["", "accuracy in noise (test split, noise seed "
            f"{details['noise']['seed']})", cli.format_table(
                ["noise"] + [k.split("_")[1] for k in by_condition
                             if k.startswith("white")],
                [[colour] + [f"{v:.2%}" for k, v in by_condition.items()
                             if k.startswith(colour)]
                 for colour in ("white", "pink")])]


def robustness_lines(details, data=None):
    """The robustness report's table: accuracy per condition and its change from
    the clean test accuracy (read off the confusion matrix)."""
    if "robustness" not in details:
        return []
    confusion = np.array(details["confusion"])
    clean = np.trace(confusion) / max(1, confusion.sum())
    report = details["robustness"]
    rows = [[name, f"{value:.2%}", f"{100 * (value - clean):+.1f}"]
            for name, value in report["accuracy"].items()]
    worst = min(report["accuracy"], key=report["accuracy"].get)
    return ["", f"robustness (test split, seed {report['seed']}; clean {clean:.2%}, "
                f"worst: {worst})",
            cli.format_table(["condition", "accuracy", "points vs clean"], rows)]


def listening_lines(details, data=None):
    """The listening report's table: each made test recording at the settings used."""
    if "listening" not in details:
        return []
    report = details["listening"]
    settings = report["settings"]
    rows = [[name, f"{r['seconds'] / 60:.0f} min", r["words"] or "-", r["events"],
             f"{r['hit_rate']:.1%}" if r["hit_rate"] is not None else "-",
             r["false_alarms"], r["false_alarms_per_hour"], r["wrong_labels"],
             r["latency_median_ms"] or "-", r["latency_p95_ms"] or "-"]
            for name, r in report["recordings"].items()]
    note = ([] if report["background_output"] else
            ["  (this model has no background or unknown output: only the threshold "
             "rejects other sounds)"])
    keyword_rows = [[name, f"{k['words']}", f"{k['hit_rate']:.1%}" if k["hit_rate"]
                     is not None else "-", k["speech_fa_per_hour"], k["stream_fa_per_hour"]]
                    for name, k in report.get("per_keyword", {}).items()]
    if keyword_rows:
        note += ["", "per keyword (the stream's hits; false alarms an hour that this "
                     "keyword fired on the keyword-free speech and in the stream)",
                 cli.format_table(["keyword", "words", "hits", "FA/h speech",
                                   "FA/h stream"], keyword_rows)]
    return ["", f"listening on made test audio (seed {report['seed']}): hop "
                f"{settings['hop_s']} s, averaged over {settings['average_s']} s, "
                f"threshold {settings['threshold']}, suppression "
                f"{settings['suppression_s']} s ({report['settings_source']})",
            cli.format_table(["recording", "length", "words", "events", "hits",
                              "false alarms", "per hour", "wrong label", "latency ms",
                              "p95 ms"], rows)] + note


def confusion_lines(details, data):
    """The confusion matrix with each label's recall."""
    labels = data.labels
    confusion = np.array(details["confusion"])
    rows = [[name] + list(row) + [f"{row[i] / max(1, row.sum()):.1%}"]
            for i, (name, row) in enumerate(zip(labels, confusion))]
    return ["", "confusion (rows: true label, columns: predicted)",
            cli.format_table(["true"] + labels + ["recall"], rows)]


def latency_lines(details, data=None):
    """The latency table: 1 thread and the default, inference and the whole path."""
    lat_rows = [[threads, kind, lat[kind]["mean_ms"], lat[kind]["median_ms"],
                 lat[kind]["p90_ms"], lat[kind]["runs"]]
                for threads, lat in details["latency"].items()
                for kind in ("inference", "total")]
    return ["", f"latency on {details['host']['cpu']} ({details['host']['interpreter']})",
            cli.format_table(["threads", "latency", "mean ms", "median ms", "p90 ms",
                              "runs"], lat_rows)]
