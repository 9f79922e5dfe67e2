"""Listening on a stream: the sliding-window detector, the recordings it is
benchmarked on, and the field's scoring rule.

The detector runs the deployed model every hop on the last second of audio with
the project's own front end (``audio.extract``), turns the logits into
probabilities, averages them over the last ``average_s`` seconds, and fires when
the best keyword's averaged probability reaches ``threshold``, at most once per
``suppression_s``. Outputs named in ``negatives.NON_KEYWORDS`` (background,
unknown speech) never fire: they only take probability away from the keywords.

Scoring (docs/spec.md, "Listening on a stream", MLPerf Tiny's rule): a detection is a
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

from common.errors import UserError
from common.kws import audio, negatives, noise, synth

HIT_WINDOW_S = 0.75
DETECTOR_METADATA = "detector"
HOP_S = 0.1  # the default and the benchmark's hop: windows 100 ms apart
RAW_RATE = audio.DATASET_RATE  # standard input: raw 16-bit little-endian mono PCM


@dataclass(frozen=True)
class DetectorSettings:
    """The detector's four settings (seconds, and a probability threshold)."""
    hop_s: float = HOP_S
    average_s: float = 0.5
    threshold: float = 0.9
    suppression_s: float = 1.0

    def __post_init__(self):
        if not (self.hop_s > 0 and self.average_s > 0 and 0 <= self.threshold <= 1
                and self.suppression_s >= 0):
            raise ValueError(f"detector settings out of range: {self}")

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


# ---------------------------------------------------------------- the detector

def softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def keyword_mask(labels):
    """Which outputs may fire: every label but background and unknown speech."""
    return np.array([negatives.is_keyword(label) for label in labels])


def hop_probabilities(runner, config, signal, hop_s, tick=None):
    """``[hops, labels]``: the probabilities of every window of ``signal`` ending at
    ``(k + 1) * hop``, each the last second before it (zeros before the start), as
    ``Listener`` computes them one by one. ``tick()`` is called after each hop."""
    rows = []
    for features in window_features(config, signal, hop_s):
        rows.append(softmax(runner(features)))
        if tick is not None:
            tick()
    return np.array(rows, np.float32).reshape(len(rows), int(runner.output["shape"][-1])
                                              if not rows else -1)


def window_features(config, signal, hop_s):
    """The features of every window ``hop_probabilities`` scores, in order."""
    hop = hop_samples(hop_s, config.sample_rate)
    window = audio.SlidingFeatures(config, hop)
    signal = np.asarray(signal, np.float32)
    for start in range(0, len(signal) - hop + 1, hop):
        yield window.push(signal[start:start + hop])


def hop_samples(hop_s, rate):
    """The hop in samples: a whole number, at least one (a UserError otherwise, as a
    fractional hop would drift from the times reported)."""
    hop = int(round(hop_s * rate))
    if hop < 1 or abs(hop - hop_s * rate) > 1e-6 * rate:
        raise UserError(f"a hop of {hop_s:g} s is not a whole number of samples at "
                        f"{rate} Hz (at least one)")
    return hop


def smooth(probs, hops):
    """Each row the mean of itself and the ``hops - 1`` rows before it (fewer at the
    start), summed oldest first in float64: exactly what ``Listener`` computes."""
    probs = np.asarray(probs, np.float32)
    total = np.zeros(probs.shape, np.float64)
    for lag in range(min(hops, len(probs)) - 1, -1, -1):  # oldest first; rows before
        total[lag:] += probs[:len(probs) - lag]             # the start add exact zeros
    count = np.minimum(np.arange(1, len(probs) + 1), hops)
    return (total / count[:, None]).astype(np.float32)


def _min_gap(settings):
    """Hops that must lie between two detections (the suppression, in whole hops)."""
    return max(0, math.ceil(settings.suppression_s / settings.hop_s - 1e-6))


def detect(probs, settings, mask, thresholds=None):
    """``[(time_s, label_index, score)]``: the detections on a recording's hop
    probabilities (``hop_probabilities``) under ``settings``; ``mask`` the outputs
    that may fire (``keyword_mask``). ``thresholds``: one per output, in place of
    ``settings.threshold`` (docs/detector_rules.py tries a threshold per keyword)."""
    smoothed = smooth(probs, settings.hops(settings.average_s))
    masked = np.where(mask, smoothed, np.float32(-1.0))
    best = masked.argmax(axis=1)
    score = masked[np.arange(len(masked)), best]
    limit = settings.threshold if thresholds is None else np.asarray(thresholds)[best]
    candidates = np.flatnonzero(score >= limit)
    gap, found, i = _min_gap(settings), [], 0
    while i < len(candidates):
        k = int(candidates[i])
        found.append((round((k + 1) * settings.hop_s, 6), int(best[k]), float(score[k])))
        i = max(i + 1, int(np.searchsorted(candidates, k + gap)))  # the next allowed
    return found


class Listener:
    """The detector on audio that arrives in pieces (a live stream): ``feed`` takes
    float samples at the model's rate and returns the detections they complete,
    with the same windows, smoothing and decisions as ``detect`` over
    ``hop_probabilities``. Holds one second of audio and ``average_s`` of scores."""

    def __init__(self, runner, config, labels, settings):
        self.runner, self.config, self.settings = runner, config, settings
        self.mask = keyword_mask(labels)
        self.hop = hop_samples(settings.hop_s, config.sample_rate)
        self.window = audio.SlidingFeatures(config, self.hop)
        self.pending = np.zeros(0, np.float32)
        self.history = []
        self.hops_done, self.last_fired = 0, None

    @property
    def seconds(self):
        return self.hops_done * self.settings.hop_s

    def feed(self, samples):
        self.pending = np.concatenate([self.pending, np.asarray(samples, np.float32)])
        found = []
        while len(self.pending) >= self.hop:
            features = self.window.push(self.pending[:self.hop])
            self.pending = self.pending[self.hop:]
            found += self._step(softmax(self.runner(features)))
        return found

    def _step(self, probs):
        """One hop's decision (``detect``'s, one row at a time)."""
        span = self.settings.hops(self.settings.average_s)
        self.history = (self.history + [probs])[-span:]
        k = self.hops_done
        self.hops_done += 1
        total = np.zeros(len(probs), np.float64)
        for row in self.history:
            total += row
        smoothed = (total / len(self.history)).astype(np.float32)
        masked = np.where(self.mask, smoothed, np.float32(-1.0))
        best = int(masked.argmax())
        if masked[best] >= self.settings.threshold and (
                self.last_fired is None or k - self.last_fired >= _min_gap(self.settings)):
            self.last_fired = k
            return [(round((k + 1) * self.settings.hop_s, 6), best, float(masked[best]))]
        return []

    def memory_bytes(self):
        """What the detector holds besides the model: the 1-s audio ring (float32
        here; int16 on a device) and the score history."""
        ring = self.window.audio
        return {"audio_ring_float32": ring.nbytes,
                "audio_ring_int16": ring.size * 2,
                "score_history": self.settings.hops(self.settings.average_s)
                * len(self.mask) * 4}


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
    fa_by_label = {}
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
            fa_by_label[label] = fa_by_label.get(label, 0) + 1
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
            "latency_p95_ms": _percentile_ms(latencies, 95),
            "seconds": round(duration_s, 1),
            "per_label": _per_label(words, hit, fa_by_label)}


def _per_label(words, hit, fa_by_label):
    """``{label (as text, for JSON): {words, hits, hit_rate, false_alarms}}``."""
    out = {}
    for (_, _, label), was_hit in zip(words, hit):
        row = out.setdefault(str(label), {"words": 0, "hits": 0, "false_alarms": 0})
        row["words"] += 1
        row["hits"] += was_hit
    for label, count in fa_by_label.items():
        out.setdefault(str(label), {"words": 0, "hits": 0, "false_alarms": 0})[
            "false_alarms"] = count
    for row in out.values():
        row["hit_rate"] = round(row["hits"] / row["words"], 4) if row["words"] else None
    return out


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


def shuffled(clips, rate, rng):
    """A word cut into 3-5 pieces played in another order: speech sounds, no word."""
    word = negatives._word(clips[int(rng.integers(len(clips)))], rate)
    pieces = np.array_split(word, int(rng.integers(3, 6)))
    order = rng.permutation(len(pieces))
    while len(order) > 1 and (order == np.arange(len(order))).all():
        order = rng.permutation(len(pieces))
    return negatives.place(np.concatenate([pieces[i] for i in order]), clips.shape[1], rng)


def babble(clips, rate, rng):
    """Three words played backwards, overlapped at random offsets: a crowd's murmur
    that holds no keyword."""
    picks = rng.choice(len(clips), min(3, len(clips)), replace=False)
    mix = sum(negatives.place(negatives._word(clips[i], rate)[::-1].copy(),
                              clips.shape[1], rng) for i in picks)
    return (mix / len(picks) ** 0.5).astype(np.float32)


def knock(clips, rate, rng):
    """One to three decaying noise bursts of 20-100 ms (a door, a cup, a keyboard)."""
    out = np.zeros(clips.shape[1], np.float32)
    for _ in range(int(rng.integers(1, 4))):
        burst = int(rng.uniform(0.02, 0.1) * rate)
        at = int(rng.integers(0, len(out) - burst))
        decay = np.exp(-np.arange(burst) / (burst / 5))
        out[at:at + burst] += (rng.uniform(0.05, 0.5) * decay
                               * noise.colored_noise("white", burst, rng)).astype(np.float32)
    return out


def chirp(clips, rate, rng):
    """A whistle or a beep: a harmonic tone of 0.2-0.8 s sweeping between two
    pitches in 200-2000 Hz."""
    seconds = rng.uniform(0.2, 0.8)
    t = np.arange(int(seconds * rate)) / rate
    f0, f1 = rng.uniform(200, 2000, 2)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    tone = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * np.hanning(len(t))
    return negatives.place((0.3 * tone).astype(np.float32), clips.shape[1], rng)


# The stream's non-keyword events. None of them is a kind the listening version
# trains on (negatives.UNKNOWN_KINDS), so its false alarms on them measure how its
# "no keyword" generalizes, not how well it learnt its own negatives.
EVENTS = {"shuffled": shuffled, "babble": babble, "knock": knock, "chirp": chirp}


def music(seconds, rate, rng):
    """Made music: a melody of harmonic notes on a pentatonic scale (plucked or held,
    some as three-note chords) at 70-180 beats a minute, unit peak."""
    total = int(seconds * rate)
    out = np.zeros(total, np.float32)
    beat = 60.0 / rng.uniform(70, 180)
    root = rng.uniform(110, 330)
    scale = root * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    harmonics = rng.uniform(0.2, 0.8, 4) ** np.arange(1, 5)
    plucked = rng.random() < 0.5
    t = 0
    while t < total:
        length = min(total - t, int(beat * rate * rng.choice([0.5, 1, 1, 2])))
        time_s = np.arange(length) / rate
        envelope = (np.exp(-time_s * rng.uniform(3, 8)) if plucked
                    else np.minimum(1, time_s * 50) * np.minimum(1, (length - np.arange(
                        length)) / (0.02 * rate)))
        notes = scale[rng.choice(len(scale), 3 if rng.random() < 0.3 else 1, replace=False)]
        for f in notes:
            out[t:t + length] += (envelope * sum(a * np.sin(2 * np.pi * f * (h + 1) * time_s)
                                                 for h, a in enumerate(harmonics)
                                                 if f * (h + 1) < rate / 2)).astype(np.float32)
        t += length
    peak = np.abs(out).max()
    return out / peak if peak > 0 else out


def _add_speech(signal, rate, start, stop, speech, others, level, rng, found, gain_db,
                pause_s):
    """Synthesized utterances (``others``: indices of ``speech`` that say no keyword)
    one after another from ``start`` to ``stop`` (samples), each at ``level`` x a
    gain from ``gain_db``, ``pause_s`` apart."""
    t = start
    while t < stop and others:
        i = others[int(rng.integers(len(others)))]
        piece = speech.signal(i)
        if t + len(piece) > stop:
            return
        if np.any(piece):
            signal[t:t + len(piece)] += negatives.at_level(piece, level, gain_db, rng)
            found.append((t / rate, (t + len(piece)) / rate,
                          f"speech:{speech.utterances[i].kind}:{speech.utterances[i].text}"))
        t += len(piece) + int(rng.uniform(*pause_s) * rate)


def _add_music(signal, rate, level, rng, found, share=1 / 3, segment_s=(10.0, 40.0)):
    """Made music under about ``share`` of the recording, in segments, 6-20 dB under
    the speech ``level``."""
    t = 0
    while t < len(signal):
        length = int(rng.uniform(*segment_s) * rate)
        if rng.random() < share:
            piece = music(min(length, len(signal) - t) / rate, rate, rng)
            gain = level * 10 ** (-rng.uniform(6, 20) / 20) * 3  # peak ~3x the RMS
            signal[t:t + len(piece)] += (gain * piece).astype(np.float32)
            found.append((t / rate, (t + len(piece)) / rate, "music"))
        t += length


def make_recording(name, clips, y, rate, seconds, rng, keywords=True, events=True,
                   gap_s=(2.0, 5.0), gain_db=(-12.0, 3.0), speech=None):
    """A recording over changing background noise. With ``keywords``: every clip of
    the split once, in a random order, 2-5 s apart, at a random gain (the recording
    is as long as that takes; ``seconds`` is ignored). Between them:

    - with ``speech`` (``synth.Speech``, at ``rate``): synthesized utterances, one
      after another from ``HIT_WINDOW_S`` after a word until just before the next
      clip (in 70 % of the gaps; the gaps are then 2-8 s), at the keywords' level
      (``negatives.typical_level``) and a gain from ``gain_db``, and made music under about a
      third of the recording;
    - else with ``events``: a non-keyword event (``EVENTS``) in 70 % of the gaps
      that leave room for one (ending before the next clip).

    Without keywords: ``seconds`` long, filled the same way (speech from the start,
    or an event every 2-5 s). A word's span is its clip's loud part
    (``negatives.active_region``)."""
    length = clips.shape[1]
    if speech is not None and rate != synth.RATE:
        raise UserError(f"the listening report's speech is made at {synth.RATE} Hz; "
                        f"this model listens at {rate} Hz")
    if speech is not None and keywords:
        gap_s = (gap_s[0], max(gap_s[1], 8.0))
    if keywords:
        starts = (rng.uniform(0.5, 2.0) + np.concatenate(
            [[0.0], np.cumsum(rng.uniform(*gap_s, len(clips) - 1))])) * rate
        starts = starts.astype(int)
        seconds = (starts[-1] + length) / rate + 1.0
    signal = background(seconds, rate, rng)
    level = negatives.typical_level(clips, rate) if speech is not None else None
    others = speech.others() if speech is not None else []
    words, found = [], []
    if keywords:
        for n, i in enumerate(rng.permutation(len(clips))):
            t = starts[n]
            signal[t:t + length] += clips[i] * np.float32(10 ** (rng.uniform(*gain_db) / 20))
            start, end = negatives.active_region(clips[i], rate)
            words.append(((t + start) / rate, (t + end) / rate, int(y[i])))
            free_from = t + end + int(HIT_WINDOW_S * rate)
            next_t = starts[n + 1] if n + 1 < len(starts) else len(signal)
            if speech is not None and rng.random() < 0.7:
                _add_speech(signal, rate, free_from, next_t, speech, others, level, rng,
                            found, gain_db, (0.1, 0.8))
            elif speech is None and events and next_t - free_from >= length \
                    and rng.random() < 0.7:
                _add_event(signal, int(rng.integers(free_from, next_t - length + 1)),
                           clips, rate, rng, found)
    elif speech is not None:
        _add_speech(signal, rate, int(rng.uniform(0.5, 2.0) * rate), len(signal), speech,
                    others, level, rng, found, gain_db, (0.1, 1.5))
    elif events:
        t = int(rng.uniform(0.5, 2.0) * rate)
        while t + length <= len(signal):
            _add_event(signal, t, clips, rate, rng, found)
            t += int(rng.uniform(*gap_s) * rate)
    if speech is not None:
        _add_music(signal, rate, level, rng, found)
    return Recording(name, np.clip(signal, -1, 1), rate, tuple(words), tuple(found))


def _add_event(signal, at, clips, rate, rng, found):
    kind = sorted(EVENTS)[int(rng.integers(len(EVENTS)))]
    piece = EVENTS[kind](clips, rate, rng) * np.float32(10 ** (rng.uniform(-12, 0) / 20))
    signal[at:at + len(piece)] += piece
    found.append((at / rate, (at + len(piece)) / rate, kind))


# The benchmark's recordings, (name, keywords, fill, length as a share of
# --listening-minutes): the keyword stream holds every clip of its split once (the test
# split's 800: about 80 minutes) between synthesized speech in voices training never
# hears (synth.VOICES) and made music; "speech_only" is that speech without keywords,
# five times --listening-minutes (5 hours by default), so that one false alarm an
# hour is measured, not guessed from one event. The shuffled-word, babble, knock and
# chirp events keep a row of their own. Validation audio is made the same way from
# the validation split and its own voices.
REPORT_RECORDINGS = (("stream", True, "speech", None),
                     ("speech_only", False, "speech", 5.0),
                     ("noise_only", False, None, 1.0),
                     ("events_only", False, "events", 1.0))
VALIDATION_RECORDINGS = (("stream", True, "speech", None),
                         ("speech_only", False, "speech", 5.0),
                         ("noise_only", False, None, 1 / 3),
                         ("events_only", False, "events", 1 / 3))
# the recordings whose false alarms the operating point is held to (the events no
# longer set it: no user makes those sounds)
CAPPED_RECORDINGS = ("stream", "speech_only", "noise_only")
DEFAULT_MINUTES = 60.0
REPORT_SEED = 4321
# the validation speech's false alarms an hour the chosen settings may make
VALIDATION_MAX_FA_PER_HOUR = 1.0
AVERAGE_CHOICES_S = (0.1, 0.2, 0.3, 0.5, 0.8)
SUPPRESSION_CHOICES_S = (1.0, 1.5)
THRESHOLDS = tuple(np.round(np.concatenate([np.arange(0.30, 0.99, 0.01),
                                            [0.99, 0.995, 0.998, 0.999]]), 4))


def listen_to(runner, config, split, plan, minutes, seed, what, hop_s=HOP_S,
              speech=None):
    """``(recordings without their samples, {name: hop probabilities})`` of the
    recordings of ``plan`` made from one split ``(clips, y)`` and its synthesized
    ``speech``, each from its own generator (the same seed gives the same audio,
    whichever model listens) and made, listened to and dropped one at a time (an
    hour of audio is 230 MB)."""
    from common import progress
    clips, y = split
    line = progress.Line(f"{what} (recordings)", len(plan))
    recs, probs = [], {}
    for i, (name, keywords, fill, share) in enumerate(plan):
        if fill == "speech" and speech is None:
            raise ValueError(f"recording {name!r} needs synthesized speech")
        rec = make_recording(name, clips, y, config.sample_rate,
                             (share or 0) * minutes * 60, np.random.default_rng([seed, i]),
                             keywords, fill == "events",
                             speech=speech if fill == "speech" else None)
        probs[name] = hop_probabilities(runner, config, rec.signal, hop_s)
        recs.append(dataclasses.replace(rec, signal=np.zeros(len(rec.signal), np.int8)))
        line.advance()
    line.finish()
    return recs, probs


def operating_point(probs_of, recs, settings, mask, thresholds=None):
    """``{name: score}`` of every recording at ``settings`` (``thresholds``: one per
    output, as ``detect`` takes them)."""
    return {r.name: score(detect(probs_of[r.name], settings, mask, thresholds),
                          list(r.words), r.seconds) for r in recs}


def preference(hits, fa_per_hour, threshold):
    """How validation ranks an operating point (the larger the better): within the
    false-alarm cap, more hits, then fewer false alarms, then the higher threshold;
    over it, fewer false alarms, then more hits. Its first item: whether the cap held."""
    feasible = fa_per_hour <= VALIDATION_MAX_FA_PER_HOUR
    return (feasible, hits if feasible else -fa_per_hour,
            -fa_per_hour if feasible else hits, threshold)


def choose_settings(probs_of, recs, mask, hop_s=HOP_S):
    """The settings chosen on validation audio: over the averaging spans, the
    suppression times and the thresholds, the highest hit rate on the keyword
    stream among those whose false alarms over all the validation audio stay within
    ``VALIDATION_MAX_FA_PER_HOUR`` (ties: fewer false alarms, then the higher
    threshold); when none does, the fewest false alarms (ties: more hits). The false
    alarms counted are those of ``CAPPED_RECORDINGS`` (speech, noise), per hour of
    them. Returns ``(settings, its operating point, whether the cap held)``."""
    capped = [r for r in recs if r.name in CAPPED_RECORDINGS]
    hours = sum(r.seconds for r in capped) / 3600
    best = None
    for average, suppression, threshold in itertools.product(
            AVERAGE_CHOICES_S, SUPPRESSION_CHOICES_S, THRESHOLDS):
        settings = DetectorSettings(hop_s, average, float(threshold), suppression)
        point = operating_point(probs_of, capped, settings, mask)
        fa = sum(p["false_alarms"] for p in point.values()) / hours
        key = preference(point["stream"]["hit_rate"] or 0.0, fa, threshold)
        if best is None or key > best[0]:
            best = key, settings, point
    return best[1], best[2], best[0][0]


def det_curve(probs_of, recs, settings, mask, labels=None):
    """``[{threshold, hit_rate, fa_per_hour (the keyword stream's),
    fa_per_hour_<recording> for the others}]`` over ``THRESHOLDS`` at the other
    settings given; with ``labels`` (and a keyword-free ``speech_only`` recording),
    also each keyword's ``{keyword: [stream hit rate, false alarms an hour of the
    speech]}``."""
    curve = []
    for threshold in THRESHOLDS:
        point = operating_point(probs_of, recs, dataclasses.replace(
            settings, threshold=float(threshold)), mask)
        curve.append({"threshold": float(threshold),
                      "hit_rate": point["stream"]["hit_rate"],
                      "fa_per_hour": point["stream"]["false_alarms_per_hour"],
                      **{f"fa_per_hour_{name}": p["false_alarms_per_hour"]
                         for name, p in point.items() if name != "stream"}})
        if labels is not None:
            curve[-1]["per_keyword"] = {
                name: [row["hit_rate"], row["speech_fa_per_hour"]]
                for name, row in per_keyword(point, labels).items()}
    return curve


def validation_settings(runner, config, labels, val_split, minutes=DEFAULT_MINUTES,
                        speech=None):
    """``(settings, operating point, whether the false-alarm cap held)`` chosen on the
    validation audio made from the validation split ``(clips, y)`` and its
    synthesized ``speech``."""
    recs, probs = listen_to(runner, config, val_split, VALIDATION_RECORDINGS, minutes,
                            REPORT_SEED + 1, "listening: validation audio",
                            speech=speech)
    return choose_settings(probs, recs, keyword_mask(labels))


def listening_report(runner, config, labels, test_split, settings,
                     minutes=DEFAULT_MINUTES, speech=None):
    """``(metrics, details)`` of the detector at ``settings`` on the test audio made
    from the test split (``REPORT_RECORDINGS``) and its synthesized ``speech``, with
    the DET curve over the thresholds and each keyword's hits and false alarms."""
    recs, probs = listen_to(runner, config, test_split, REPORT_RECORDINGS, minutes,
                            REPORT_SEED, "listening: test audio", settings.hop_s,
                            speech=speech)
    mask = keyword_mask(labels)
    point = operating_point(probs, recs, settings, mask)
    s = point["stream"]
    metrics = {"stream_hit_rate": s["hit_rate"],
               "stream_fa_per_hour": s["false_alarms_per_hour"],
               "speech_fa_per_hour": point["speech_only"]["false_alarms_per_hour"],
               "weakest_keyword_hit_rate": min(
                   (k["hit_rate"] for k in s["per_label"].values()
                    if k["hit_rate"] is not None), default=None),
               "noise_fa_per_hour": point["noise_only"]["false_alarms_per_hour"],
               "events_fa_per_hour": point["events_only"]["false_alarms_per_hour"],
               "stream_wrong_label_rate": s["wrong_label_rate"],
               "latency_median_ms": s["latency_median_ms"],
               "latency_p95_ms": s["latency_p95_ms"]}
    details = {"settings": dataclasses.asdict(settings), "seed": REPORT_SEED,
               "recordings": {r.name: {"seconds": round(r.seconds, 1),
                                       "words": len(r.words), "events": len(r.events),
                                       **point[r.name]} for r in recs},
               "det": det_curve(probs, recs, settings, mask, labels),
               "per_keyword": per_keyword(point, labels),
               "speech_fired_on": fired_on(
                   detect(probs["speech_only"], settings, mask),
                   next(r.events for r in recs if r.name == "speech_only"), labels),
               "background_output": negatives.listens(labels)}
    return metrics, details


def fired_on(detections, events, labels, window_s=1.0, top=8):
    """``{keyword: [[text, count]]}``: what each keyword's detections on keyword-free
    speech fired on, the made event that fills most of the window before each
    (an utterance's text, "music", or "noise" when none), the ``top`` most often."""
    counts = {}
    for time_s, label, _ in detections:
        overlap = {}
        for start, end, kind in events:
            inside = min(end, time_s) - max(start, time_s - window_s)
            if inside > 0:
                name = kind.split(":", 2)[-1] if kind.startswith("speech:") else kind
                overlap[name] = overlap.get(name, 0.0) + inside
        sound = max(overlap, key=overlap.get) if overlap else "noise"
        by_sound = counts.setdefault(labels[label], {})
        by_sound[sound] = by_sound.get(sound, 0) + 1
    return {k: sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            for k, v in sorted(counts.items())}


def per_keyword(point, labels):
    """``{keyword: {words, hits, hit_rate, false alarms an hour on the keyword-free
    speech, in the stream}}`` from an operating point's per-label counts."""
    speech, stream_ = point["speech_only"], point["stream"]
    hours = {name: point[name]["seconds"] / 3600 for name in ("stream", "speech_only")}
    out = {}
    for index, name in enumerate(labels):
        if not negatives.is_keyword(name):
            continue
        s = stream_["per_label"].get(str(index), {})
        out[name] = {"words": s.get("words", 0), "hits": s.get("hits", 0),
                     "hit_rate": s.get("hit_rate"),
                     "speech_fa_per_hour": round(speech["per_label"].get(
                         str(index), {}).get("false_alarms", 0) / hours["speech_only"], 3),
                     "stream_fa_per_hour": round(s.get("false_alarms", 0)
                                                 / hours["stream"], 3)}
    return out


def listening_cost(tflite_bytes, config, settings, labels=None, seconds=60.0,
                   seed=REPORT_SEED):
    """Seconds of compute per second of audio of the detector (front end + invoke
    every hop) on one thread, on ``seconds`` of noise, and its own memory (``labels``
    None: every output a keyword)."""
    import time
    from common.tflite.runtime import Runner
    runner = Runner(tflite_bytes, num_threads=1)
    labels = labels or [str(i) for i in range(int(runner.output["shape"][-1]))]
    signal = background(seconds, config.sample_rate, np.random.default_rng(seed))
    listener = Listener(runner, config, labels, settings)
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
        return negatives.listens(self.labels)


def recorded_settings(tflite_bytes, path="the model"):
    """The detector settings a model records (a listening version's), else None."""
    from common.tflite import tflite_file
    recorded = tflite_file.read_metadata(tflite_bytes, DETECTOR_METADATA)
    return DetectorSettings.from_text(recorded, path) if recorded else None


def read_spotter(path):
    """The model at ``path`` (.tflite or .tflite.zlib) with its labels, feature
    configuration and (for a listening version) detector settings, all from its
    metadata. A file this pipeline did not write as a keyword spotter is a UserError."""
    from common import artifacts
    from common.kws import features
    from common.tflite import tflite_file
    model = artifacts.read_model(path)
    tflite = model.tflite_bytes
    return Spotter(path, tflite, tflite_file.read_labels(tflite, path),
                   features.read_features(tflite, path), recorded_settings(tflite, path))
