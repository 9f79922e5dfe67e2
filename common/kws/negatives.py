"""Examples of "no keyword" for a listening spotter, made from what the project has.

Mini Speech Commands holds only the eight keywords, so a spotter that must say "no
keyword" learns it from made examples (the shipped recipe uses nothing else: no
speech synthesis, no outside recordings):

- **silence** (``BACKGROUND``): coloured noise at a level from near-silence to loud,
  its colour and level changing once inside the second, as a room's background does;
- **unknown** (``UNKNOWN``): speech that is no keyword, built from the keyword clips
  themselves: a part of a word (its start or its end), the first part of one word
  spliced onto the rest of another word, a word played backwards, a word resampled
  far slower or faster (pitch and rate together).

Every generator draws only from the clips it is given (the training split's, in
training) and from ``rng``. ``user_negatives`` cuts a folder of the user's own
non-keyword WAV files into 1-s pieces (``--negatives``).
"""
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from common.errors import UserError
from common.kws import audio, noise

BACKGROUND, UNKNOWN = "_silence_", "_unknown_"
NON_KEYWORDS = (BACKGROUND, UNKNOWN)
UNKNOWN_KINDS = ("partial", "splice", "reverse", "stretch")
# a user's file under a folder of one of these names is background, else unknown speech
BACKGROUND_FOLDERS = ("_background_noise_", BACKGROUND, "background", "noise")
_FRAME_S = 0.01


def is_keyword(label):
    return label not in NON_KEYWORDS


def listens(labels):
    """Whether a model with these outputs can say "no keyword" (a listening version)."""
    return not all(is_keyword(label) for label in labels)


@dataclass(frozen=True)
class Negatives:
    """How many made negatives a listening version trains on, as fractions of the
    keyword examples (each copy counted), and which kinds of unknown speech.

    The field's datasets use 10-25 % of each (Speech Commands' 12-class task,
    micro_speech, MLPerf Tiny). Frozen and hashable: it keys the cached features."""
    silence_fraction: float = 0.1
    unknown_fraction: float = 0.2
    unknown_kinds: tuple = UNKNOWN_KINDS
    silence_dbfs: tuple = (-80.0, -20.0)  # background RMS level, uniform in dBFS
    stretch_factors: tuple = ((0.55, 0.7), (1.45, 1.8))  # resampling factor ranges
    # issue 27: synthesized speech (common/kws/synth.py), fractions of the keyword
    # examples like the two above: windows of other words and phrases (unknown),
    # synthesized keywords (their keyword), and keyword clips with other speech just
    # before or after the word (their keyword: a stream puts words side by side)
    synth_unknown_fraction: float = 0.0
    synth_keyword_fraction: float = 0.0
    context_fraction: float = 0.0
    # windows cut from made streams of training keywords between synthesized speech,
    # labelled by how much of a keyword they hold (coverage_label)
    stream_fraction: float = 0.0
    synth_plan: object = None  # synth.Plan of the training voices' utterances
    # hard-negative mining (train.mine_hard_negatives): rounds of listening to
    # mining_minutes of keyword-free speech in the training voices, adding every
    # window whose best keyword reaches mining_threshold as unknown speech, and
    # training mining_epochs more at a tenth of the learning rate
    mining_rounds: int = 0
    mining_minutes: float = 60.0
    mining_threshold: float = 0.5
    mining_epochs: int = 8

    @property
    def synthesizes(self):
        return bool(self.synth_unknown_fraction or self.synth_keyword_fraction
                    or self.context_fraction or self.stream_fraction)

    def __post_init__(self):
        object.__setattr__(self, "unknown_kinds", tuple(self.unknown_kinds))
        object.__setattr__(self, "silence_dbfs", tuple(self.silence_dbfs))
        object.__setattr__(self, "stretch_factors",
                           tuple(tuple(r) for r in self.stretch_factors))
        unknown = [k for k in self.unknown_kinds if k not in UNKNOWN_KINDS]
        if unknown:
            raise ValueError(f"unknown_kinds must be a choice of "
                             f"{', '.join(UNKNOWN_KINDS)}, "
                             f"got {unknown}")
        for name in ("silence_fraction", "unknown_fraction", "synth_unknown_fraction",
                     "synth_keyword_fraction", "context_fraction", "stream_fraction"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.unknown_fraction and not self.unknown_kinds:
            raise ValueError("unknown_fraction > 0 needs at least one unknown kind")
        if self.synthesizes and self.synth_plan is None:
            raise ValueError("synthesized negatives need a synth_plan")


def active_region(signal, rate, floor_db=-30.0):
    """``(start, end)`` sample indices of the loud part of a clip: the first and last
    10-ms frame whose RMS is within ``floor_db`` of the loudest frame's (the whole
    clip when it is silent)."""
    frame = max(1, int(rate * _FRAME_S))
    n = len(signal) // frame
    if n == 0:
        return 0, len(signal)
    rms = np.sqrt(np.mean(np.square(signal[:n * frame].reshape(n, frame),
                                    dtype=np.float64), axis=1))
    peak = rms.max()
    if peak <= 0:
        return 0, len(signal)
    loud = np.flatnonzero(rms >= peak * 10 ** (floor_db / 20))
    return int(loud[0] * frame), int(min(len(signal), (loud[-1] + 1) * frame))


def place(piece, length, rng):
    """``piece`` at a random offset in a zero clip of ``length`` samples."""
    piece = piece[:length]
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(piece) + 1))
    out[start:start + len(piece)] = piece
    return out


def silence(count, length, aug, rng):
    """``count`` background clips: two segments of coloured noise, each of a colour
    and an RMS level (``aug.silence_dbfs``) of its own, split at a random point."""
    out = np.zeros((count, length), np.float32)
    for i in range(count):
        cut = int(rng.integers(length // 4, 3 * length // 4))
        for start, stop in ((0, cut), (cut, length)):
            colour = noise.COLOURS[int(rng.integers(len(noise.COLOURS)))]
            level = 10 ** (rng.uniform(*aug.silence_dbfs) / 20)
            out[i, start:stop] = level * noise.colored_noise(colour, stop - start, rng)
    return np.clip(out, -1.0, 1.0, out=out)


def _word(clip, rate):
    start, end = active_region(clip, rate)
    return clip[start:end]


def partial(clip, other, rate, aug, rng):
    """The first or the last 25-55 % of a word, at a random offset."""
    word = _word(clip, rate)
    keep = max(1, int(len(word) * rng.uniform(0.25, 0.55)))
    piece = word[:keep] if rng.random() < 0.5 else word[-keep:]
    return place(piece, len(clip), rng)


def splice(clip, other, rate, aug, rng):
    """The first part of one word joined to the rest of another (cut at the same
    relative point, 30-70 % into each)."""
    a, b = _word(clip, rate), _word(other, rate)
    cut = rng.uniform(0.3, 0.7)
    return place(np.concatenate([a[:int(len(a) * cut)], b[int(len(b) * cut):]]),
                 len(clip), rng)


def reverse(clip, other, rate, aug, rng):
    """The word played backwards."""
    return place(_word(clip, rate)[::-1].copy(), len(clip), rng)


def stretch(clip, other, rate, aug, rng):
    """The word resampled by a factor far from 1 (slower and lower, or faster and
    higher: rate and pitch together), from ``aug.stretch_factors``."""
    low, high = aug.stretch_factors[int(rng.integers(len(aug.stretch_factors)))]
    factor = rng.uniform(low, high)
    word = _word(clip, rate)
    # resampling by a rational up/down: a factor > 1 plays the word slower
    up = int(round(factor * 20))
    return place(audio.resample(word, 20, up), len(clip), rng)


GENERATORS = {"partial": partial, "splice": splice, "reverse": reverse, "stretch": stretch}


def unknown(clips, y, count, rate, aug, rng, kinds=None):
    """``(waves [count, samples], kinds [count])``: unknown speech made from
    ``clips`` (with integer labels ``y``): each from a random clip, a kind drawn
    uniformly from ``kinds`` (default ``aug.unknown_kinds``); a splice's second word
    is of another label when the clips hold one."""
    kinds = tuple(kinds or aug.unknown_kinds)
    n, length = clips.shape
    out = np.zeros((count, length), np.float32)
    drawn = []
    for i in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        first = int(rng.integers(n))
        others = np.flatnonzero(y != y[first])
        second = int(rng.choice(others)) if len(others) else int(rng.integers(n))
        out[i] = GENERATORS[kind](clips[first], clips[second], rate, aug, rng)
        drawn.append(kind)
    return np.clip(out, -1.0, 1.0, out=out), drawn


def make(clips, y, examples, aug, rate, rng, background_index, unknown_index):
    """``(waves, labels)``: the made negatives for ``examples`` keyword examples,
    silence first, then unknown speech, labelled ``background_index`` and
    ``unknown_index``."""
    length = clips.shape[1]
    n_silence = int(round(aug.silence_fraction * examples))
    n_unknown = int(round(aug.unknown_fraction * examples)) if aug.unknown_kinds else 0
    waves = np.concatenate([silence(n_silence, length, aug, rng),
                            unknown(clips, y, n_unknown, rate, aug, rng)[0]])
    labels = np.array([background_index] * n_silence + [unknown_index] * n_unknown,
                      np.int64)
    return waves, labels


def typical_level(clips, rate):
    """The median RMS of the loud part of (up to 400 of) ``clips``: the level other
    speech is mixed at, so other talkers are as loud as the keywords' talkers."""
    levels = [np.sqrt(np.mean(np.square(c[slice(*active_region(c, rate))]),
                              dtype=np.float64)) for c in clips[:400]]
    levels = [v for v in levels if v > 0]
    return float(np.median(levels)) if levels else 0.05


def at_level(piece, level, gain_db, rng):
    """``piece`` scaled to RMS ``level`` x a gain drawn from ``gain_db`` (silence as it is)."""
    rms = np.sqrt(np.mean(np.square(piece), dtype=np.float64)) if len(piece) else 0.0
    if rms == 0:
        return piece
    return (piece * (level * 10 ** (rng.uniform(*gain_db) / 20) / rms)).astype(np.float32)


def speech_windows(speech, indices, count, length, level, rng, gain_db=(-12.0, 3.0)):
    """``count`` windows of ``length`` samples of synthesized utterances drawn from
    ``indices`` (of ``speech``, a ``synth.Speech``): one shorter than the window
    placed whole at a random offset, a longer one a random crop; at ``level`` (RMS)
    and a gain from ``gain_db``."""
    out = np.zeros((count, length), np.float32)
    for row in range(count):
        piece = speech.signal(int(indices[int(rng.integers(len(indices)))]))
        if len(piece) > length:
            start = int(rng.integers(0, len(piece) - length + 1))
            piece = piece[start:start + length]
        out[row] = place(at_level(piece, level, gain_db, rng), length, rng)
    return np.clip(out, -1.0, 1.0, out=out)


def with_context(clips, speech, indices, level, rate, rng, pause_s=(0.05, 0.3),
                 gain_db=(-6.0, 3.0)):
    """Each of ``clips`` (copied) with other speech beside its word, as a stream puts
    words side by side: the end of an utterance before the word, or the start of one
    after it (each half the time), ``pause_s`` from the word, at ``level`` and a gain
    from ``gain_db``. The word itself is left whole; a clip with no room is kept as
    it is."""
    out = np.array(clips, np.float32, copy=True)
    length = out.shape[1]
    for row in range(len(out)):
        start, end = active_region(out[row], rate)
        piece = at_level(speech.signal(int(indices[int(rng.integers(len(indices)))])),
                          level, gain_db, rng)
        pause = int(rng.uniform(*pause_s) * rate)
        if rng.random() < 0.5:
            room = max(0, start - pause)
            if room:
                out[row, :room] += piece[-room:] if len(piece) >= room else np.pad(
                    piece, (room - len(piece), 0))
        else:
            room = max(0, length - end - pause)
            if room:
                out[row, end + pause:] += piece[:room] if len(piece) >= room else np.pad(
                    piece, (0, room - len(piece)))
    return np.clip(out, -1.0, 1.0, out=out)


# a window holding at least WHOLE of a keyword's loud part is that keyword; at most
# MOSTLY_ABSENT of it, no keyword; in between it carries no loss (left out)
WHOLE, MOSTLY_ABSENT = 0.95, 0.35


def coverage_label(start_s, end_s, words, speech_spans, background_index, unknown_index):
    """The label of the window ``[start_s, end_s)`` of a made stream with keywords
    ``words`` ``[(start, end, label index)]`` and other speech ``speech_spans``
    ``[(start, end)]``: the keyword whose loud part lies at least ``WHOLE`` inside
    (the latest, if two do); None (no loss) when a keyword lies partly inside, more
    than ``MOSTLY_ABSENT``; else unknown when any speech or a sliver of a keyword
    lies inside, background when none does."""
    def inside(start, end):
        return max(0.0, min(end, end_s) - max(start, start_s))
    shares = [(inside(start, end) / max(end - start, 1e-9), start, label)
              for start, end, label in words]
    whole = [(start, label) for share, start, label in shares if share >= WHOLE]
    if whole:
        return max(whole)[1]
    if any(share > MOSTLY_ABSENT for share, _, _ in shares):
        return None
    if any(share > 0 for share, _, _ in shares) or any(
            inside(start, end) > 0 for start, end in speech_spans):
        return unknown_index
    return background_index


def cut_windows(recording, count, rng, background_index, unknown_index, near_end=0.5):
    """``(waves, labels)``: up to ``count`` 1-s windows cut from a made ``recording``
    (``stream.Recording``), labelled by ``coverage_label``, those without a label
    left out. ``near_end`` of them end 0-300 ms after a keyword's end (the windows a
    detector fires on), the others anywhere."""
    rate, length = recording.rate, recording.rate  # 1-s windows
    speech_spans = [(s, e) for s, e, kind in recording.events if kind.startswith("speech")]
    waves, labels = [], []
    for _ in range(count):
        if recording.words and rng.random() < near_end:
            word = recording.words[int(rng.integers(len(recording.words)))]
            end = int((word[1] + rng.uniform(0.0, 0.3)) * rate)
        else:
            end = int(rng.integers(length, len(recording.signal) + 1))
        end = min(max(end, length), len(recording.signal))
        label = coverage_label((end - length) / rate, end / rate, recording.words,
                               speech_spans, background_index, unknown_index)
        if label is not None:
            waves.append(recording.signal[end - length:end])
            labels.append(label)
    return (np.array(waves, np.float32).reshape(len(waves), length),
            np.array(labels, np.int64))


def from_speech(speech, clips, y, examples, negs, rate, rng, labels, unknown_index):
    """``(waves, labels)`` made with synthesized ``speech`` for a split whose keyword
    examples number ``examples``: windows of other speech (unknown), synthesized
    keywords (each its keyword's index in ``labels``; only when ``speech`` holds
    them), and the split's ``clips`` with other speech beside the word."""
    length = clips.shape[1]
    level = typical_level(clips, rate)
    other = speech.others()
    keyword_rows = [i for i in speech.indices(kind="keyword") if speech.utterances[i].label
                    in labels]
    parts = [(np.zeros((0, length), np.float32), np.zeros(0, np.int64))]
    n = int(round(negs.synth_unknown_fraction * examples))
    if n and other:
        parts.append((speech_windows(speech, other, n, length, level, rng),
                      np.full(n, unknown_index, np.int64)))
    n = int(round(negs.synth_keyword_fraction * examples))
    if n and keyword_rows:
        picks = np.array(keyword_rows)[rng.integers(0, len(keyword_rows), n)]
        waves = np.stack([place(at_level(speech.signal(int(i)), level, (-12.0, 3.0), rng),
                                length, rng) for i in picks])
        parts.append((np.clip(waves, -1, 1), np.array(
            [labels.index(speech.utterances[i].label) for i in picks], np.int64)))
    n = int(round(negs.stream_fraction * examples))
    if n and other:
        from common.kws import stream
        picks = rng.permutation(len(clips))[:max(1, min(len(clips), n // 4))]
        recording = stream.make_recording("training stream", clips[picks],
                                          np.asarray(y)[picks], rate, None, rng,
                                          speech=speech)
        parts.append(cut_windows(recording, n, rng, labels.index(BACKGROUND),
                                 unknown_index))
    n = int(round(negs.context_fraction * examples))
    if n and other:
        rows = rng.integers(0, len(clips), n)
        parts.append((with_context(clips[rows], speech, other, level, rate, rng),
                      np.asarray(y)[rows]))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _audio_files(folder):
    """``(WAV files, how many other files were skipped)`` under ``folder``, sorted
    (Speech Commands ships a README and lists beside its WAVs)."""
    if not os.path.isdir(folder):
        raise UserError(f"--negatives {folder!r} is not a folder")
    found, skipped = [], 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".wav") and not name.startswith("."):
                found.append(os.path.join(root, name))
            else:
                skipped += 1
    if not found:
        raise UserError(f"--negatives {folder!r} holds no WAV files; give a folder of WAV "
                        "files of non-keyword audio")
    return found, skipped


def user_negatives(folder, rate):
    """``(waves [n, samples], is_background [n], record)``: every WAV file under
    ``folder`` (any length, any rate: resampled to ``rate``) cut into 1-s pieces
    (a last piece shorter than half a second is dropped, a longer one padded). A
    file in a folder named like ``_background_noise_`` (``folder`` itself included)
    is background, any other unknown speech; other files are skipped and counted.
    ``record`` names the folder, its files and pieces and one sha256 over each
    file's relative path and bytes (length-prefixed, ``/``-separated), for the
    results JSON. A ``.wav`` file that is not 16-bit PCM is a UserError."""
    length = int(rate * audio.CLIP_SECONDS)
    pieces, background, digest = [], [], hashlib.sha256()
    files, skipped = _audio_files(folder)
    top = os.path.basename(os.path.normpath(os.path.abspath(folder)))
    for path in files:
        parts = os.path.relpath(path, folder).split(os.sep)
        content = audio.read_file(path)
        for field in ("/".join(parts).encode(), content):
            digest.update(len(field).to_bytes(8, "little") + field)
        signal, file_rate = audio.read_wav_any(path, content)
        signal = audio.resample_long(signal, file_rate, rate)
        is_bg = any(part in BACKGROUND_FOLDERS for part in [top] + parts[:-1])
        for start in range(0, len(signal), length):
            piece = signal[start:start + length]
            if len(piece) * 2 >= length:
                pieces.append(audio.pad_or_cut(piece, length))
                background.append(is_bg)
    if not pieces:
        raise UserError(f"--negatives {folder!r}: no file holds half a second of audio")
    record = {"folder": os.path.abspath(folder), "files": len(files),
              "skipped_files": skipped, "pieces": len(pieces),
              "background_pieces": int(sum(background)), "sha256": digest.hexdigest()}
    return np.stack(pieces), np.array(background, bool), record


def user_cap(negs, examples):
    """At most as many of the user's pieces join training as the made negatives
    (the recipe's fractions of ``examples``): a folder of 100 000 other words would
    otherwise drown the keywords."""
    return int(round((negs.silence_fraction + negs.unknown_fraction) * examples))
