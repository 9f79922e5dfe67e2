"""Listening on a stream: the sliding-window detector, the recordings it is
benchmarked on, and the field's scoring rule.

The detector runs the deployed model every hop on the last second of audio with
the project's own front end (``audio.extract``), turns the logits into
probabilities, averages them over the last ``average_s`` seconds, and fires when
the best keyword's averaged probability reaches ``threshold``, at most once per
``suppression_s``. Outputs named in ``negatives.NON_KEYWORDS`` (background,
unknown speech) never fire: they only take probability away from the keywords.

Scoring (SPEC.md, "Listening on a stream", MLPerf Tiny's rule): a detection is a
**hit** when its label is the word's and it fires between the word's start and
``HIT_WINDOW_S`` after the word's end, each word hit at most once; every other
detection is a **false alarm** (one inside the window of a word of another label
is also counted as a wrong label).
"""
import bisect
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np

from common import audio, negatives, noise
from common.errors import UserError

HIT_WINDOW_S = 0.75
DETECTOR_METADATA = "detector"
HOP_S = 0.1  # the benchmark's hop: the windows it scores are 100 ms apart
RAW_RATE = audio.DATASET_RATE  # standard input: raw 16-bit little-endian mono PCM


@dataclass(frozen=True)
class DetectorSettings:
    """The detector's four settings (seconds, and a probability threshold)."""
    hop_s: float = 0.1
    average_s: float = 0.5
    threshold: float = 0.9
    suppression_s: float = 1.0

    def hops(self, seconds):
        return max(1, int(round(seconds / self.hop_s)))

    def to_text(self):
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_text(cls, text, path):
        try:
            return cls(**{k: float(v) for k, v in json.loads(text).items()})
        except (ValueError, TypeError, AttributeError):
            raise UserError(f"{path!r} has damaged 'detector' metadata; retrain it "
                            "or give every detector setting on the command line") from None


# ---------------------------------------------------------------- audio input

def read_wav_any(path, content=None):
    """``(float32 mono signal in [-1, 1], sample rate)`` of a 16-bit PCM WAV of any
    length, rate and channel count (``audio.read_pcm``; channels are averaged)."""
    samples, rate = audio.read_pcm(path, content, hint="give a 16-bit PCM WAV file")
    return samples.astype(np.float32).mean(axis=1) / 32768.0, rate


def resample_long(signal, from_rate, to_rate, block_outputs=16000):
    """``audio.resample`` of a recording of any length, in blocks (the one-shot
    version's temporaries grow with the length times the up-sampling factor); each
    block is computed with enough context that the result is the one-shot one."""
    g = math.gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    signal = np.asarray(signal, np.float32)
    if up == down:
        return signal
    _, half_len = audio._resample_filter(up, down)
    per_block = max(1, block_outputs // up)           # input blocks of per_block * down
    step_in, step_out = per_block * down, per_block * up
    context = -(-(half_len // up + 2) // down) * down  # the filter's reach, in whole
    n_out = -(-len(signal) * up // down)               # multiples of down
    out = np.empty(n_out, np.float32)
    for start in range(0, len(signal), step_in):
        lo = max(0, start - context)
        piece = audio.resample(signal[lo:start + step_in + context], from_rate, to_rate)
        skip = (start - lo) * up // down  # exact: start - lo is a multiple of down
        first = start * up // down
        count = min(step_out, n_out - first)
        out[first:first + count] = piece[skip:skip + count]
    return out


# ---------------------------------------------------------------- the detector

def softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def window_probabilities(runner, config, window):
    """The model's class probabilities for one 1-s window (``config``'s rate)."""
    return softmax(runner(audio.extract(config, window)))


def hop_probabilities(runner, config, signal, hop_s, tick=None):
    """``[hops, labels]``: the probabilities of every window of ``signal`` ending at
    ``(k + 1) * hop``, each the last second before it (zeros before the start), as
    ``Listener`` computes them one by one. ``tick()`` is called after each hop."""
    hop = int(round(hop_s * config.sample_rate))
    length = config.clip_samples
    padded = np.concatenate([np.zeros(length, np.float32), np.asarray(signal, np.float32)])
    ends = range(length + hop, len(padded) + 1, hop)
    rows = []
    for end in ends:
        rows.append(window_probabilities(runner, config, padded[end - length:end]))
        if tick is not None:
            tick()
    return np.array(rows, np.float32).reshape(len(rows), -1)


def smooth(probs, hops):
    """Each row the mean of itself and the ``hops - 1`` rows before it (fewer at the
    start)."""
    csum = np.cumsum(np.vstack([np.zeros((1, probs.shape[1])), probs]), axis=0)
    idx = np.arange(1, len(probs) + 1)
    lo = np.maximum(0, idx - hops)
    return ((csum[idx] - csum[lo]) / (idx - lo)[:, None]).astype(np.float32)


def detect(probs, settings, keyword_mask):
    """``[(time_s, label_index, score)]``: the detections on a recording's hop
    probabilities (``hop_probabilities``) under ``settings``."""
    smoothed = smooth(probs, settings.hops(settings.average_s))
    masked = np.where(keyword_mask, smoothed, -1.0)
    best = masked.argmax(axis=1)
    score = masked[np.arange(len(masked)), best]
    candidates = np.flatnonzero(score >= settings.threshold)
    gap = settings.suppression_s / settings.hop_s - 1e-6  # hops between two detections
    found, i = [], 0
    while i < len(candidates):
        k = candidates[i]
        found.append((round((k + 1) * settings.hop_s, 6), int(best[k]), float(score[k])))
        i = int(np.searchsorted(candidates, k + gap, side="left"))  # the next allowed
    return found


class Listener:
    """The detector on audio that arrives in pieces (a live stream): ``feed`` takes
    float samples at the model's rate and returns the detections they complete,
    with the same windows, smoothing and decisions as ``detect`` over
    ``hop_probabilities``. Holds one second of audio and ``average_s`` of scores."""

    def __init__(self, runner, config, labels, settings):
        self.runner, self.config, self.settings = runner, config, settings
        self.keyword_mask = np.array([negatives.is_keyword(l) for l in labels])
        self.hop = int(round(settings.hop_s * config.sample_rate))
        self.ring = np.zeros(config.clip_samples, np.float32)
        self.pending = np.zeros(0, np.float32)
        self.history = []
        self.hops_done, self.last = 0, -math.inf

    @property
    def seconds(self):
        return self.hops_done * self.settings.hop_s

    def feed(self, samples):
        self.pending = np.concatenate([self.pending, np.asarray(samples, np.float32)])
        found = []
        while len(self.pending) >= self.hop:
            self.ring = np.concatenate([self.ring[self.hop:], self.pending[:self.hop]])
            self.pending = self.pending[self.hop:]
            found += self._step(window_probabilities(self.runner, self.config, self.ring))
        return found

    def _step(self, probs):
        self.history = (self.history + [probs])[-self.settings.hops(self.settings.average_s):]
        self.hops_done += 1
        smoothed = np.mean(self.history, axis=0)
        masked = np.where(self.keyword_mask, smoothed, -1.0)
        best = int(masked.argmax())
        time_s = self.hops_done * self.settings.hop_s
        if (masked[best] >= self.settings.threshold
                and time_s - self.last >= self.settings.suppression_s - 1e-9):
            self.last = time_s
            return [(round(time_s, 6), best, float(masked[best]))]
        return []

    def memory_bytes(self):
        """What the detector holds besides the model: the 1-s audio ring (float32
        here; int16 on a device) and the score history."""
        return {"audio_ring_float32": self.ring.nbytes,
                "audio_ring_int16": self.ring.size * 2,
                "score_history": self.settings.hops(self.settings.average_s)
                * len(self.keyword_mask) * 4}


# ---------------------------------------------------------------- scoring

def score(detections, words, duration_s):
    """The scoring rule over ``detections`` ``[(time_s, label, score)]`` and
    ``words`` ``[(start_s, end_s, label)]``: hits, misses, false alarms (per hour),
    wrong labels and the latency of each hit (fire time minus the word's end)."""
    words = sorted(words)
    starts = [start for start, _, _ in words]
    longest = max([end - start for start, end, _ in words], default=0) + HIT_WINDOW_S
    hit = [False] * len(words)
    latencies, false_alarms, wrong = [], 0, 0
    for time_s, label, _ in sorted(detections):
        match, other_word = None, False
        first = bisect.bisect_left(starts, time_s - longest - 1e-6)
        for i in range(first, bisect.bisect_right(starts, time_s)):
            start, end, word_label = words[i]
            if start <= time_s <= end + HIT_WINDOW_S + 1e-9:
                other_word |= word_label != label
                if word_label == label and not hit[i]:
                    match = i
                    break
        if match is None:
            false_alarms += 1
            wrong += other_word
        else:
            hit[match] = True
            latencies.append(time_s - words[match][1])
    hours = duration_s / 3600.0
    return {"words": len(words), "hits": sum(hit),
            "hit_rate": round(sum(hit) / len(words), 4) if words else None,
            "false_alarms": false_alarms,
            "false_alarms_per_hour": round(false_alarms / hours, 3),
            "wrong_labels": wrong,
            "wrong_label_rate": round(wrong / len(words), 4) if words else None,
            "latency_median_ms": _percentile_ms(latencies, 50),
            "latency_p95_ms": _percentile_ms(latencies, 95)}


def _percentile_ms(values, q):
    return round(1000 * float(np.percentile(values, q)), 1) if values else None


# ---------------------------------------------------------------- recordings

@dataclass(frozen=True)
class Recording:
    """A made recording: its samples, its keywords ``[(start_s, end_s, label)]`` and
    its non-keyword events ``[(start_s, end_s, kind)]``."""
    name: str
    signal: np.ndarray
    rate: int
    words: tuple
    events: tuple

    @property
    def seconds(self):
        return len(self.signal) / self.rate


EVENT_KINDS = negatives.UNKNOWN_KINDS + ("babble", "knock")


def background(seconds, rate, rng, dbfs=(-70.0, -35.0), segment_s=(2.0, 6.0)):
    """Coloured noise whose colour and level change every 2-6 s."""
    total = int(seconds * rate)
    out = np.zeros(total, np.float32)
    start = 0
    while start < total:
        stop = min(total, start + int(rng.uniform(*segment_s) * rate))
        if stop - start >= 2:
            colour = noise.COLOURS[int(rng.integers(len(noise.COLOURS)))]
            out[start:stop] = (10 ** (rng.uniform(*dbfs) / 20)
                               * noise.colored_noise(colour, stop - start, rng))
        start = stop
    return out


def event(kind, clips, y, rate, rng):
    """One non-keyword event (1 s): unknown speech made from ``clips`` as in
    training (``negatives``), or babble (three words of different clips overlapped at
    random offsets, summed), or a knock (a few decaying noise bursts)."""
    length = clips.shape[1]
    if kind in negatives.GENERATORS:
        return negatives.unknown(clips, y, 1, rate, negatives.Negatives(), rng,
                                 kinds=(kind,))[0][0]
    if kind == "babble":
        picks = rng.choice(len(clips), 3, replace=False)
        return np.clip(sum(np.roll(clips[i], int(rng.integers(-length // 3, length // 3)))
                           for i in picks) / 1.5, -1, 1).astype(np.float32)
    out = np.zeros(length, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        burst = int(rng.uniform(0.02, 0.1) * rate)
        at = int(rng.integers(0, length - burst))
        decay = np.exp(-np.arange(burst) / (burst / 5))
        out[at:at + burst] += (rng.uniform(0.05, 0.5) * decay
                               * noise.colored_noise("white", burst, rng)).astype(np.float32)
    return np.clip(out, -1, 1)


def make_recording(name, clips, y, labels, rate, seconds, rng, keywords=True,
                   events=True, gap_s=(2.0, 5.0), gain_db=(-12.0, 3.0)):
    """A recording of ``seconds`` over changing background noise: with
    ``keywords``, the split's clips (in a random order, cycled) every 2-5 s at a
    random gain; with ``events``, non-keyword events between them (at least
    ``HIT_WINDOW_S`` after a word and before the next clip), or every 2-5 s when
    there are no keywords. A word's span is its clip's loud part
    (``negatives.active_region``)."""
    signal = background(seconds, rate, rng)
    length = clips.shape[1]
    total = len(signal)
    order = rng.permutation(len(clips))
    words, evs = [], []
    t = int(rng.uniform(0.5, 2.0) * rate)
    n = 0
    free_from = 0
    while t + length <= total:
        if keywords:
            i = order[n % len(order)]
            n += 1
            clip = clips[i] * np.float32(10 ** (rng.uniform(*gain_db) / 20))
            signal[t:t + length] += clip
            start, end = negatives.active_region(clips[i], rate)
            words.append(((t + start) / rate, (t + end) / rate, int(y[i])))
            free_from = t + end + int(HIT_WINDOW_S * rate)
            next_t = t + int(rng.uniform(*gap_s) * rate)
            if (events and next_t - free_from >= length and next_t <= total
                    and rng.random() < 0.7):
                at = int(rng.integers(free_from, next_t - length + 1))
                _add_event(signal, at, clips, y, rate, rng, evs)
            t = next_t
        else:
            _add_event(signal, t, clips, y, rate, rng, evs) if events else None
            t += int(rng.uniform(*gap_s) * rate)
    return Recording(name, np.clip(signal, -1, 1), rate, tuple(words), tuple(evs))


def _add_event(signal, at, clips, y, rate, rng, found):
    kind = EVENT_KINDS[int(rng.integers(len(EVENT_KINDS)))]
    piece = event(kind, clips, y, rate, rng) * np.float32(10 ** (rng.uniform(-12, 0) / 20))
    count = min(len(piece), len(signal) - at)
    if count <= 0:
        return
    signal[at:at + count] += piece[:count]
    found.append((at / rate, (at + len(piece)) / rate, kind))


# the benchmark's recordings: (name, length in units of the keyword stream's, keywords,
# events); the stream is 10 minutes by default (--listening-minutes), so the
# keyword-free recordings are an hour each
REPORT_RECORDINGS = (("stream", 1, True, True), ("noise_only", 6, False, False),
                     ("events_only", 6, False, True))
VALIDATION_RECORDINGS = (("stream", 1, True, True), ("noise_only", 1, False, False),
                         ("events_only", 2, False, True))
DEFAULT_MINUTES = 10.0
REPORT_SEED = 4321
# the validation audio's false alarms per hour the chosen settings may reach
VALIDATION_MAX_FA_PER_HOUR = 1.0
AVERAGE_CHOICES_S = (0.3, 0.5, 0.8)
SUPPRESSION_CHOICES_S = (1.0, 1.5)
THRESHOLDS = tuple(np.round(np.concatenate([np.arange(0.30, 0.99, 0.01),
                                            [0.99, 0.995, 0.998, 0.999]]), 4))


def recordings(clips, y, labels, rate, plan, minutes, seed):
    """The recordings of ``plan`` made from one split, the keyword stream
    ``minutes`` long, each from its own generator (the same seed gives the same
    audio, whichever model listens)."""
    return [make_recording(name, clips, y, labels, rate, units * minutes * 60,
                           np.random.default_rng([seed, i]), keywords, events)
            for i, (name, units, keywords, events) in enumerate(plan)]


def operating_point(probs_of, recs, settings, keyword_mask):
    """``{name: score}`` of every recording at ``settings``, and the totals."""
    found = {r.name: score(detect(probs_of[r.name], settings, keyword_mask), list(r.words),
                           r.seconds) for r in recs}
    return found


def choose_settings(probs_of, recs, keyword_mask, hop_s=HOP_S):
    """The settings chosen on validation audio: over the averaging spans, the
    suppression times and the thresholds, the highest hit rate on the keyword
    stream whose false alarms over all the validation audio stay within
    ``VALIDATION_MAX_FA_PER_HOUR`` (ties: fewer false alarms, then the higher
    threshold). Returns ``(settings, its operating point)``."""
    hours = sum(r.seconds for r in recs) / 3600
    best = None
    for average, suppression, threshold in itertools.product(
            AVERAGE_CHOICES_S, SUPPRESSION_CHOICES_S, THRESHOLDS):
        settings = DetectorSettings(hop_s, average, float(threshold), suppression)
        point = operating_point(probs_of, recs, settings, keyword_mask)
        fa = sum(p["false_alarms"] for p in point.values()) / hours
        key = (fa <= VALIDATION_MAX_FA_PER_HOUR, point["stream"]["hit_rate"] or 0.0, -fa,
               threshold)
        if best is None or key > best[0]:
            best = key, settings, point
    return best[1], best[2]


def det_curve(probs_of, recs, settings, keyword_mask):
    """``[{threshold, hit_rate, fa_per_hour (stream), fa_per_hour_noise,
    fa_per_hour_events}]`` over ``THRESHOLDS`` at the other settings given."""
    curve = []
    for threshold in THRESHOLDS:
        point = operating_point(probs_of, recs, dataclasses.replace(
            settings, threshold=float(threshold)), keyword_mask)
        curve.append({"threshold": float(threshold),
                      "hit_rate": point["stream"]["hit_rate"],
                      "fa_per_hour": point["stream"]["false_alarms_per_hour"],
                      **{f"fa_per_hour_{name}": p["false_alarms_per_hour"]
                         for name, p in point.items() if name != "stream"}})
    return curve


def probabilities_of(runner, config, recs, what):
    """``{name: hop probabilities}`` of each recording, with a progress line."""
    from common import progress
    line = progress.Line(f"{what} (hops)", sum(int(r.seconds / HOP_S) for r in recs))
    found = {r.name: hop_probabilities(runner, config, r.signal, HOP_S, line.advance)
             for r in recs}
    line.finish()
    return found


def validation_settings(runner, config, labels, val_split, minutes=DEFAULT_MINUTES):
    """``(settings, operating point)`` chosen on the validation audio made from the
    validation split ``(clips, y)``."""
    recs = recordings(*val_split, labels, config.sample_rate, VALIDATION_RECORDINGS,
                      minutes, REPORT_SEED + 1)
    mask = np.array([negatives.is_keyword(l) for l in labels])
    probs = probabilities_of(runner, config, recs, "listening: validation audio")
    return choose_settings(probs, recs, mask)


def listening_report(runner, config, labels, test_split, settings,
                     minutes=DEFAULT_MINUTES):
    """``(metrics, details)`` of the detector at ``settings`` on the test audio made
    from the test split: the keyword stream (``minutes`` long), noise only and
    noise with non-keyword events (6 times as long each: an hour by default); with
    the DET curve over the thresholds."""
    recs = recordings(*test_split, labels, config.sample_rate, REPORT_RECORDINGS,
                      minutes, REPORT_SEED)
    mask = np.array([negatives.is_keyword(l) for l in labels])
    probs = probabilities_of(runner, config, recs, "listening: test audio")
    point = operating_point(probs, recs, settings, mask)
    s = point["stream"]
    metrics = {"stream_hit_rate": s["hit_rate"],
               "stream_fa_per_hour": s["false_alarms_per_hour"],
               "noise_fa_per_hour": point["noise_only"]["false_alarms_per_hour"],
               "events_fa_per_hour": point["events_only"]["false_alarms_per_hour"],
               "stream_wrong_label_rate": s["wrong_label_rate"],
               "latency_median_ms": s["latency_median_ms"],
               "latency_p95_ms": s["latency_p95_ms"]}
    details = {"settings": dataclasses.asdict(settings), "seed": REPORT_SEED,
               "recordings": {r.name: {"seconds": r.seconds, "words": len(r.words),
                                       "events": len(r.events), **point[r.name]}
                              for r in recs},
               "det": det_curve(probs, recs, settings, mask),
               "background_output": not bool(mask.all())}
    return metrics, details


def listening_cost(tflite_bytes, config, seconds=60.0, seed=REPORT_SEED):
    """Seconds of compute per second of audio of the detector (front end + invoke
    every hop) on one thread, on ``seconds`` of noise, and its own memory."""
    import time
    from common.runtime import Runner
    runner = Runner(tflite_bytes, num_threads=1)
    labels = [str(i) for i in range(int(runner.output["shape"][-1]))]
    signal = background(seconds, config.sample_rate, np.random.default_rng(seed))
    listener = Listener(runner, config, labels, DetectorSettings())
    start = time.perf_counter()
    listener.feed(signal)
    spent = time.perf_counter() - start
    return {"listen_cpu_s_per_audio_s": round(spent / seconds, 5),
            "listen_realtime_factor": round(seconds / spent, 1)}, listener.memory_bytes()


@dataclass(frozen=True)
class Spotter:
    """A keyword-spotting model file as the detector needs it."""
    path: str
    tflite_bytes: bytes
    labels: list
    features: audio.FeatureConfig
    settings: DetectorSettings  # recorded in the model, else None

    @property
    def listens(self):
        """Whether the model has an output for background or unknown speech."""
        return not all(negatives.is_keyword(label) for label in self.labels)


def read_spotter(path):
    """The model at ``path`` (.tflite or .tflite.zlib) with its labels, feature
    configuration and (for a listening version) detector settings, all from its
    metadata. A file this pipeline did not write as a keyword spotter is a UserError."""
    from common import artifacts, tflite_file
    model = artifacts.read_model(path)
    labels = tflite_file.read_labels(model.tflite_bytes, path)
    text = tflite_file.read_required(model.tflite_bytes, path, "features")
    try:
        features = audio.FeatureConfig(**json.loads(text))
    except (ValueError, TypeError):
        raise UserError(f"{path!r} has damaged 'features' metadata; retrain it") from None
    recorded = tflite_file.read_metadata(model.tflite_bytes, DETECTOR_METADATA)
    settings = DetectorSettings.from_text(recorded, path) if recorded else None
    return Spotter(path, model.tflite_bytes, labels, features, settings)
