#!/usr/bin/env python3
"""What the detector's rule can and cannot do for a listening model (e).

1. Would a threshold per keyword catch more than e's one threshold? For each averaging
span, a threshold per keyword is chosen on the validation audio (the most stream hits
with at most ``stream.VALIDATION_MAX_FA_PER_HOUR`` false alarms an hour over the capped
recordings, the rule that chooses e's one threshold, solved exactly as a knapsack over
the keywords' own hits and false alarms), then scored on the test audio; beside it,
the model's recorded settings.
2. The DET of every averaging span (0.1-1.5 s) on the validation audio: the most stream
hits within 1, 2, 5 and 10 false alarms an hour of keyword-free speech.
3. How confident the model is on the keywords it should catch: the share of the test
stream's keywords whose own probability peaks (within the hit window) at 0.5, 0.9,
0.99 and 0.995, raw and averaged as recorded, and the same on the 800 isolated test
clips.
4. Each keyword's DET on the test audio at the recorded settings: its most stream hits
within 1, 2, 5, 10 and 20 of its own false alarms an hour of keyword-free speech.
5. Two other forms of rule, each chosen on the validation audio by the same rule as the
one threshold and scored on the test audio, with the test DET of the chosen form: k of
the last n hops' raw keyword probability at least a threshold, and a keyword's
averaged probability less the larger of background's and unknown's at least a
threshold.
The hop probabilities of both audios are computed once and kept in ``--cache``.
Writes docs/kws_detector_rules.json (or ``--out``).

Usage: python docs/detector_rules.py [--model models/kws_e.tflite.zlib]
       [--data-dir data] [--cache /tmp/e_probs.pkl] [--out JSON]
"""
import argparse
import dataclasses
import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401
import numpy as np  # noqa: E402

from common import artifacts  # noqa: E402
from common.kws import audio, speech, stream, synth  # noqa: E402

OFF = 2.0  # a threshold no probability reaches: the keyword never fires
LEVELS = (0.5, 0.9, 0.99, 0.995)
AVERAGES_S = (0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5)
SPEECH_CAPS = (1, 2, 5, 10)
KEYWORD_CAPS = (1, 2, 5, 10, 20)
K_OF_N_HOPS = (2, 3, 5, 8)


def listened(path, data_dir, cache):
    """``{"val"|"test": (recordings, {name: hop probabilities}), "labels": [...]}``."""
    if cache and os.path.exists(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)
    from common.tflite.runtime import Runner
    spotter = stream.read_spotter(path)
    corpus = speech.Corpus(data_dir, data_dir, 0, ("val", "test"), spotter.labels)
    clips = corpus.load(spotter.features.sample_rate)
    runner = Runner(spotter.tflite_bytes)
    out = {"labels": spotter.labels}
    for split, plan, seed in (("val", stream.VALIDATION_RECORDINGS, stream.REPORT_SEED + 1),
                              ("test", stream.REPORT_RECORDINGS, stream.REPORT_SEED)):
        out[split] = stream.listen_to(
            runner, spotter.features, clips.splits[split], plan, stream.DEFAULT_MINUTES,
            seed, split, speech=corpus.synthesized(
                split, synth.heldout_plan(stream.DEFAULT_MINUTES)))
    if cache:
        artifacts.atomic_write_bytes(cache, pickle.dumps(out))
    return out


def measured(split, settings, thresholds, mask):
    """Stream hits, false alarms an hour on the keyword-free speech and on all the
    capped recordings."""
    recs, probs = split
    point = stream.operating_point(probs, recs, settings, mask, thresholds)
    capped = [r for r in recs if r.name in stream.CAPPED_RECORDINGS]
    hours = sum(r.seconds for r in capped) / 3600
    return {"stream_hit_rate": point["stream"]["hit_rate"],
            "speech_fa_per_hour": point["speech_only"]["false_alarms_per_hour"],
            "capped_fa_per_hour": round(sum(point[r.name]["false_alarms"]
                                            for r in capped) / hours, 3)}


def per_keyword_thresholds(split, settings, mask):
    """The thresholds with the most validation stream hits within the cap: each
    keyword's (hits, false alarms) at every threshold, alone, then a knapsack."""
    recs, probs = split
    capped = [r for r in recs if r.name in stream.CAPPED_RECORDINGS]
    budget = int(stream.VALIDATION_MAX_FA_PER_HOUR * sum(r.seconds for r in capped)
                 / 3600 + 1e-9)
    best = {0: (0, {})}  # false alarms used -> (hits, {keyword: threshold})
    for k in np.flatnonzero(mask):
        options = [(OFF, 0, 0)]
        for t in stream.THRESHOLDS:
            thresholds = np.full(len(mask), OFF, np.float32)
            thresholds[k] = t
            point = stream.operating_point(probs, capped, settings, mask, thresholds)
            options.append((float(t), point["stream"]["hits"],
                            sum(p["false_alarms"] for p in point.values())))
        grown = {}
        for used, (hits, chosen) in best.items():
            for t, more, fa in options:
                if used + fa <= budget and (used + fa not in grown
                                            or hits + more > grown[used + fa][0]):
                    grown[used + fa] = (hits + more, {**chosen, int(k): t})
        best = grown
    _, chosen = max(best.values(), key=lambda v: v[0])
    thresholds = np.full(len(mask), OFF, np.float32)
    for k, t in chosen.items():
        thresholds[k] = t
    return thresholds


def most_hits_within(points, cap):
    """The highest hit rate of the DET ``points`` ``[(hit rate, false alarms an
    hour)]`` with at most ``cap`` false alarms an hour (None: no such point)."""
    return max((hits for hits, fa in points if fa <= cap and hits is not None),
               default=None)


def det_by_average(split, settings, mask):
    """``{average: {cap: the most stream hits within cap false alarms an hour of
    keyword-free speech}}`` over ``THRESHOLDS``."""
    recs, probs = split
    out = {}
    for average in AVERAGES_S:
        curve = stream.det_curve(probs, recs, dataclasses.replace(
            settings, average_s=average), mask)
        out[average] = {cap: most_hits_within(
            [(c["hit_rate"], c["fa_per_hour_speech_only"]) for c in curve], cap)
            for cap in SPEECH_CAPS}
    return out


def det_per_keyword(split, settings, labels):
    """``{keyword: {cap: its most stream hits within cap of its own false alarms an
    hour of keyword-free speech}}`` over ``THRESHOLDS``."""
    recs, probs = split
    curve = stream.det_curve(probs, recs, settings, stream.keyword_mask(labels), labels)
    return {name: {cap: most_hits_within([c["per_keyword"][name] for c in curve], cap)
                   for cap in KEYWORD_CAPS}
            for name in curve[0]["per_keyword"]}


def shares_reaching(peaks):
    return {level: round(float(np.mean(np.asarray(peaks) >= level)), 4) for level in LEVELS}


def keyword_peaks(split, settings):
    """``{average: shares}``: each stream keyword's own probability at its highest
    within the hit window, raw (one hop) and averaged as ``settings`` say."""
    recs, probs = split
    rec = next(r for r in recs if r.name == "stream")
    out = {}
    for average in (settings.hop_s, settings.average_s):
        smoothed = stream.smooth(probs["stream"], settings.hops(average))
        peaks = [smoothed[int(start / settings.hop_s):
                          int((end + stream.HIT_WINDOW_S) / settings.hop_s) + 1, label].max()
                 for start, end, label in rec.words]
        out[average] = shares_reaching(peaks)
    return out


def clip_peaks(path, data_dir):
    """The shares of the 800 isolated test clips whose own label reaches each level."""
    from common.tflite.runtime import Runner
    spotter = stream.read_spotter(path)
    corpus = speech.Corpus(data_dir, data_dir, 0, ("test",), spotter.labels)
    clips, y = corpus.load(spotter.features.sample_rate).splits["test"]
    runner = Runner(spotter.tflite_bytes)
    return shares_reaching([stream.softmax(runner(audio.extract(spotter.features, c)))[label]
                            for c, label in zip(clips, y)])


def k_of_n_scores(probs_of, threshold, mask):
    """Each keyword's raw probability turned into 1 where it reaches ``threshold``, else
    0: averaged over n hops and compared with k/n, "k of the last n hops". A
    thousandth of the probability is added so that ties go to the likelier keyword."""
    return {name: np.where(mask, (p >= threshold) + 1e-3 * p, p).astype(np.float32)
            for name, p in probs_of.items()}


def margin_scores(probs_of, labels, mask):
    """Each keyword's probability less the larger of background's and unknown's."""
    rest = [labels.index(name) for name in labels if name.startswith("_")]
    return {name: np.where(mask, p - p[:, rest].max(axis=1, keepdims=True), p)
            for name, p in probs_of.items()}


def scored_forms(probs_of, labels, mask, recorded):
    """``(form, settings, scores)`` of every k-of-n shape and threshold, and of every
    averaging span and threshold of the margin: the scores ``detect`` thresholds."""
    for t in stream.THRESHOLDS:
        scores = k_of_n_scores(probs_of, t, mask)
        for n in K_OF_N_HOPS:
            for k in range(1, n + 1):
                yield ({"rule": "k of n hops", "k": k, "n": n, "hop_threshold": float(t)},
                       dataclasses.replace(recorded, average_s=n * recorded.hop_s,
                                           threshold=k / n - 1e-6), scores)
    margins = margin_scores(probs_of, labels, mask)
    for average in stream.AVERAGE_CHOICES_S:
        for t in stream.THRESHOLDS:
            yield ({"rule": "margin over background and unknown", "average_s": average,
                    "threshold": float(t)},
                   dataclasses.replace(recorded, average_s=average, threshold=float(t)),
                   margins)


def shape(form):
    """A form without its threshold: what its DET varies the threshold of."""
    return {k: v for k, v in form.items() if k not in ("hop_threshold", "threshold")}


def other_rules(heard, labels, mask, recorded):
    """Each form's choice on validation (the most stream hits within the cap) and its
    figures on the test audio, with the test DET of its chosen shape."""
    best = {}
    for form, settings, scores in scored_forms(heard["val"][1], labels, mask, recorded):
        point = measured((heard["val"][0], scores), settings, None, mask)
        key = stream.preference(point["stream_hit_rate"] or 0.0,
                                point["capped_fa_per_hour"],
                                form.get("hop_threshold", form.get("threshold")))
        if form["rule"] not in best or key > best[form["rule"]][0]:
            best[form["rule"]] = key, form, point
    rows = []
    for _, form, point in best.values():
        row, curve = {**form, "validation": point}, []
        for other, settings, scores in scored_forms(heard["test"][1], labels, mask, recorded):
            if shape(other) == shape(form):
                curve.append(measured((heard["test"][0], scores), settings, None, mask))
                if other == form:
                    row["test"] = curve[-1]
        row["test_det"] = {cap: most_hits_within(
            [(c["stream_hit_rate"], c["speech_fa_per_hour"]) for c in curve], cap)
            for cap in KEYWORD_CAPS}
        rows.append(row)
        print(row, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "kws_e.tflite.zlib"))
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--cache", help="keep the hop probabilities in this file")
    parser.add_argument("--out", default=os.path.join(HERE, "kws_detector_rules.json"))
    args = parser.parse_args()
    heard = listened(args.model, args.data_dir, args.cache)
    labels = heard["labels"]
    mask = stream.keyword_mask(labels)
    recorded = stream.read_spotter(args.model).settings
    one = np.where(mask, recorded.threshold, OFF).astype(np.float32)
    rows = [{"rule": "one threshold (recorded)", **dataclasses.asdict(recorded),
             "validation": measured(heard["val"], recorded, one, mask),
             "test": measured(heard["test"], recorded, one, mask)}]
    for average in stream.AVERAGE_CHOICES_S:
        settings = dataclasses.replace(recorded, average_s=average)
        thresholds = per_keyword_thresholds(heard["val"], settings, mask)
        rows.append({"rule": "a threshold per keyword", **dataclasses.asdict(settings),
                     "thresholds": {labels[k]: round(float(thresholds[k]), 4)
                                    for k in np.flatnonzero(mask)},
                     "validation": measured(heard["val"], settings, thresholds, mask),
                     "test": measured(heard["test"], settings, thresholds, mask)})
        print(rows[-1], flush=True)
    result = {"model": os.path.relpath(args.model, ROOT), "per_keyword_thresholds": rows,
              "validation_det_by_average": det_by_average(heard["val"], recorded, mask),
              "test_keyword_peaks": keyword_peaks(heard["test"], recorded),
              "test_clip_peaks": clip_peaks(args.model, args.data_dir),
              "test_det_per_keyword": det_per_keyword(heard["test"], recorded, labels),
              "other_rules": other_rules(heard, labels, mask, recorded)}
    print({k: result[k] for k in ("validation_det_by_average", "test_keyword_peaks",
                                  "test_clip_peaks", "test_det_per_keyword")})
    artifacts.atomic_write_bytes(args.out, artifacts.json_bytes(result))


if __name__ == "__main__":
    main()
