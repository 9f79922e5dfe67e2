"""Mini Speech Commands: split lists, clip loading, cached features, augmentation."""
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np

from common import progress
from common.kws import audio, negatives, noise, robustness, synth
from common.errors import UserError

URL = "http://storage.googleapis.com/download.tensorflow.org/data/mini_speech_commands.zip"
DATASET_FOLDER = "mini_speech_commands"
SPLITS = ("train", "val", "test")


def split_list_path(split_dir, split):
    return os.path.join(split_dir, f"kws_{split}_split.txt")


def read_split(split_dir, split, data_dir):
    """``(paths, label_names)`` of one split. The list's lines look like
    ``./data/mini_speech_commands/<label>/<file>.wav``; only the last three parts are
    used, under ``data_dir``. Raises UserError for a missing list or listed file, and
    for a clip listed twice (it would count twice)."""
    list_path = split_list_path(split_dir, split)
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = [(number, line.strip()) for number, line in enumerate(f, 1)
                     if line.strip()]
    except IsADirectoryError:
        raise UserError(f"split list {list_path!r} is a folder, not a text file") from None
    except OSError:
        raise UserError(f"split list {list_path!r} is missing; pass --split-dir with "
                        "the folder holding kws_{train,val,test}_split.txt") from None
    except UnicodeDecodeError:
        raise UserError(f"split list {list_path!r} is not UTF-8 text (one WAV path per "
                        "line)") from None
    if not lines:
        raise UserError(f"split list {list_path!r} is empty")
    paths, labels, seen = [], [], {}
    for number, line in lines:
        parts = line.replace("\\", "/").split("/")
        if len(parts) < 3:
            raise UserError(f"{list_path!r}: {line!r} is not a <dataset>/<label>/<file> path")
        path = os.path.join(data_dir, *parts[-3:])
        if path in seen:
            raise UserError(f"{list_path!r} line {number}: {line!r} lists the clip of line "
                            f"{seen[path]} again (it would count twice); remove one")
        seen[path] = number
        if os.path.isdir(path):
            raise UserError(f"{path!r} (listed in {list_path}) is a folder, not a WAV "
                            f"file; {audio.REPLACE}")
        if not os.path.isfile(path):
            raise UserError(f"{path!r} (listed in {list_path}) does not exist; point "
                            "--data-dir at the folder holding mini_speech_commands/")
        paths.append(path)
        labels.append(parts[-2])
    return paths, labels


def load_clips(paths, sample_rate):
    """Every clip as float32 padded or cut to 1 s at ``sample_rate``: ``[n, samples]``,
    and one sha256 over the files' bytes in list order (each file is read once)."""
    length = int(sample_rate * audio.CLIP_SECONDS)
    clips = np.zeros((len(paths), length), np.float32)
    digest = hashlib.sha256()
    for i, path in enumerate(paths):
        content = audio.read_file(path)
        digest.update(content)
        signal = audio.pad_or_cut(audio.read_wav(path, content=content), audio.DATASET_RATE)
        clips[i] = audio.pad_or_cut(audio.resample(signal, audio.DATASET_RATE, sample_rate),
                                    length)
    return clips, digest.hexdigest()


def compute_features(config, clips, tick=None):
    """The features of every clip, computed once: ``[n, *config.shape]``;
    ``tick()`` (a progress line's ``advance``) is called after each clip."""
    features = []
    for clip in clips:
        features.append(audio.extract(config, clip))
        if tick is not None:
            tick()
    return np.stack(features)


@dataclass(frozen=True)
class Perturbation:
    """One room/microphone/speaker ingredient of the augmentation: with probability
    ``probability`` an example gets ``kind`` (a key of ``PERTURBATIONS``) with its
    parameter drawn uniformly in ``[low, high]`` (its unit is the kind's)."""
    kind: str
    probability: float
    low: float
    high: float

    def __post_init__(self):
        if self.kind not in PERTURBATIONS:
            raise ValueError(f"kind must be one of {', '.join(PERTURBATIONS)}, got "
                             f"{self.kind!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if self.low > self.high:
            raise ValueError(f"{self.kind}: low {self.low} > high {self.high}")
        if self.kind in POSITIVE_KINDS and self.low <= 0:
            raise ValueError(f"{self.kind} needs a range above 0, got low {self.low}")


POSITIVE_KINDS = ("speed", "warp", "reverb", "lowpass")  # factors, seconds, a cut in Hz


def _speed(x, rate, rng, factor):
    # the factor on a 0.05 grid: source rates are multiples of 800 Hz, so the
    # polyphase filter stays short (about 5 ms a clip; 0.93 alone takes 65 ms)
    return robustness.speed(x, rate, rng, round(factor * 20) / 20)


def _reverb(x, rate, rng, rt60_s):
    # one source distance: the tail's energy grows with RT60, as in the report
    # (0 dB direct-to-reverberant at 0.3 s)
    return robustness.reverb(x, rate, rng, rt60_s, -10.0 * np.log10(rt60_s / 0.3))


# kind -> (function(clips [1, samples], rate, rng, value), applied before the noise):
# the talker and the room shape the word before the background joins it; the
# microphone (its band, its colouring, its level and clipping) takes both.
PERTURBATIONS = {
    "speed": (_speed, True),                      # speaking-rate factor (0.85-1.15)
    "warp": (robustness.warp, True),              # mel-axis factor
    "reverb": (_reverb, True),                    # RT60 in seconds
    "lowpass": (lambda x, r, g, v: robustness.band(x, r, g, 0.0, v), False),  # cut, Hz
    "highpass": (lambda x, r, g, v: robustness.band(x, r, g, v, r / 2), False),  # Hz
    "tilt": (lambda x, r, g, v: robustness.apply_tilt(x, r, [v]), False),  # dB/octave
    "level": (robustness.level, False),           # dB, clipped
}


def perturb(clips, perturbations, before_noise, rate, rng):
    """``clips`` (modified in place) through the ``perturbations`` of one stage
    (``before_noise`` or after), in order, each drawn per example from ``rng``."""
    for p in perturbations:
        function, early = PERTURBATIONS[p.kind]
        if early != before_noise:
            continue
        rows = np.flatnonzero(rng.random(len(clips)) < p.probability)
        for i, value in zip(rows, rng.uniform(p.low, p.high, len(rows))):
            clips[i] = function(clips[i:i + 1], rate, rng, float(value))[0]
    return clips


@dataclass(frozen=True)
class Augmentation:
    """Waveform augmentation of the training set, drawn per example and per copy: a
    time shift, a gain, then (for most examples) additive noise at a random SNR;
    ``perturbations`` (``Perturbation``: talker, room, microphone) join before and
    after the noise.

    The SNR is relative to the example's own power after shift and gain (docs/spec.md's
    definition, ``noise.mix_at_snr``); the noise is coloured Gaussian noise
    (``noise.colored_noise``) or, for a share of the noisy examples, background
    speech: another clip of the same batch. The result is clipped to [-1, 1], as a
    16-bit recording would hold it. Frozen and hashable (it keys cached features);
    lists given for the tuple fields are stored as tuples.
    """
    copies: int = 0                  # augmented copies of the training set appended
    max_shift_s: float = 0.1         # time shift, uniform in +-max_shift_s, zero-filled
    gain_range: tuple = (0.8, 1.2)   # gain, uniform in [low, high]
    snr_db_range: tuple = (0.0, 20.0)  # noisy examples: SNR in dB, uniform in [low, high]
    clean_fraction: float = 0.2      # probability that an example gets no noise at all
    colours: tuple = noise.COLOURS   # noise colours, one drawn uniformly per example
    speech_fraction: float = 0.25    # probability that a noisy example's noise is
    #                                  background speech instead: another clip of the
    #                                  batch (another index), circularly shifted by a
    #                                  uniform random offset, mixed at an SNR from
    #                                  snr_db_range (coloured noise if that clip is silent)
    perturbations: tuple = ()        # Perturbation ingredients (talker, room, microphone)

    def __post_init__(self):
        for name in ("gain_range", "snr_db_range", "colours", "perturbations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.snr_db_range) != 2 or self.snr_db_range[0] > self.snr_db_range[1]:
            raise ValueError(f"snr_db_range must be (low, high) with low <= high, got "
                             f"{self.snr_db_range}")
        if len(self.gain_range) != 2 or self.gain_range[0] > self.gain_range[1]:
            raise ValueError(f"gain_range must be (low, high) with low <= high, got "
                             f"{self.gain_range}")
        for name in ("clean_fraction", "speech_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        unknown = [c for c in self.colours if c not in noise.COLOURS]
        if unknown or not self.colours:
            raise ValueError(f"colours must be a non-empty choice of "
                             f"{', '.join(noise.COLOURS)}, got {self.colours}")
        if self.max_shift_s < 0:
            raise ValueError(f"max_shift_s must be >= 0, got {self.max_shift_s}")


_MIX_ROWS = 256  # examples mixed at once: bounds the temporaries' memory


def augment(clips, aug, rng, rate):
    """One augmented copy of ``clips`` (``[n, samples]``, float32), every random draw
    from ``rng`` (the same seed gives the same copy); ``clips`` is not modified.

    Per example: a zero-filled shift, a gain; then with probability
    ``1 - aug.clean_fraction`` noise at an SNR uniform in ``aug.snr_db_range`` dB
    (relative to the shifted, scaled example): background speech (another clip,
    circularly shifted) with probability ``aug.speech_fraction``, else Gaussian
    noise of a colour drawn from ``aug.colours``. Clipped to [-1, 1]. A silent
    example gets no noise (its SNR is undefined). Noise of one colour is made for
    all its examples at once (``noise.colored_noise`` with ``count``).
    ``aug.perturbations`` (clips at ``rate`` Hz) join before and after the noise
    (``perturb``); without them no draw is made for them, so older recipes' copies
    stay as they were.
    """
    clips = np.asarray(clips, np.float32)
    n, length = clips.shape
    max_shift = int(aug.max_shift_s * length)
    out = np.zeros_like(clips)
    shifts = rng.integers(-max_shift, max_shift + 1, n)
    for i, shift in enumerate(shifts):
        if shift >= 0:
            out[i, shift:] = clips[i, :length - shift]
        else:
            out[i, :shift] = clips[i, -shift:]
    out *= rng.uniform(*aug.gain_range, (n, 1)).astype(np.float32)
    if aug.perturbations:
        perturb(out, aug.perturbations, True, rate, rng)

    noisy = rng.random(n) >= aug.clean_fraction
    snrs = rng.uniform(*aug.snr_db_range, n)
    speech = noisy & (rng.random(n) < aug.speech_fraction) & (n > 1)
    colour_of = rng.integers(0, len(aug.colours), n)
    partner = (np.arange(n) + rng.integers(1, max(n, 2), n)) % n  # never the example
    offsets = rng.integers(0, length, n)

    silent = np.concatenate([noise.power(clips[i:i + _MIX_ROWS]) == 0
                             for i in range(0, n, _MIX_ROWS)] or [np.zeros(0, bool)])
    speech &= ~silent[partner]  # a silent partner: coloured noise instead
    speech_rows = np.flatnonzero(speech)
    for start in range(0, len(speech_rows), _MIX_ROWS):
        rows = speech_rows[start:start + _MIX_ROWS]
        background = np.stack([np.roll(clips[partner[i]], offsets[i]) for i in rows])
        out[rows] = noise.mix_at_snr(out[rows], background, snrs[rows])

    for c, colour in enumerate(aug.colours):
        rows = np.flatnonzero(noisy & ~speech & (colour_of == c))
        for start in range(0, len(rows), _MIX_ROWS):
            chunk = rows[start:start + _MIX_ROWS]
            out[chunk] = noise.mix_at_snr(
                out[chunk], noise.colored_noise(colour, length, rng, count=len(chunk)),
                snrs[chunk])
    if aug.perturbations:
        perturb(out, aug.perturbations, False, rate, rng)
    return np.clip(out, -1.0, 1.0, out=out)


@dataclass
class SpeechData:
    labels: list
    train: tuple
    val: tuple
    test: tuple


@dataclass
class Clips:
    """Every split's waveforms at one sample rate, with integer labels."""
    labels: list
    splits: dict  # split -> (clips [n, samples], labels [n])
    sha256: dict  # split -> digest of its files' bytes, in list order


def check_label_sets(split_labels, expected, source):
    """Every split must hold exactly the ``expected`` labels (from ``source``: the
    training list, or the model): a misspelt folder or a missing word is an error
    naming the label and the list, not a model with the wrong number of outputs."""
    for list_path, names in split_labels.items():
        extra = sorted(set(names) - set(expected))
        missing = sorted(set(expected) - set(names))
        if extra or missing:
            problems = ([f"label {', '.join(extra)} that {source} lacks"] if extra else []) \
                + ([f"no clip of {', '.join(missing)}"] if missing else [])
            raise UserError(f"{list_path} has {' and '.join(problems)}; every split must "
                            f"hold the same {len(expected)} labels ({', '.join(expected)})")


def check_disjoint(split_paths):
    """No clip may be in two splits: a test clip seen in training inflates accuracy."""
    seen = {}
    for list_path, paths in split_paths.items():
        for path in paths:
            other = seen.setdefault(os.path.realpath(path), list_path)
            if other != list_path:
                raise UserError(f"{path!r} is listed in both {other} and {list_path}; "
                                "the splits must not share clips")


def load_splits(data_dir, split_dir, sample_rate, splits=SPLITS, labels=None,
                extra_labels=()):
    """Read the split lists of ``splits`` and load their clips (once per sample rate).

    The label order is ``labels`` (a model's own, under --evaluate) or the sorted
    label set of the training list followed by ``extra_labels`` (a listening
    version's background and unknown outputs, ``negatives.NON_KEYWORDS``, which no
    list holds); each listed split must hold exactly the keyword labels, and a
    clip's index is its folder name's position in that one order.
    """
    split_paths = {s: read_split(split_dir, s, data_dir) for s in splits}
    if labels is None:
        labels = sorted(set(read_split(split_dir, "train", data_dir)[1]
                            if "train" not in split_paths else split_paths["train"][1]))
        labels += list(extra_labels)
        source = f"the training list {split_list_path(split_dir, 'train')}"
    else:
        source = "the model"
    check_label_sets({split_list_path(split_dir, s): split_paths[s][1] for s in splits},
                     [name for name in labels if negatives.is_keyword(name)], source)
    check_disjoint({split_list_path(split_dir, s): split_paths[s][0] for s in splits})
    index = {name: i for i, name in enumerate(labels)}
    loaded, digests = {}, {}
    for split in splits:
        paths, names = split_paths[split]
        waves, digests[split] = load_clips(paths, sample_rate)
        loaded[split] = (waves, np.array([index[n] for n in names], np.int64))
    return Clips(list(labels), loaded, digests)


def featurize(clips, config, aug, seed, tick=None):
    """Features of every loaded split, computed once; the training split gets
    ``aug.copies`` augmented copies appended. A split not loaded is empty.
    ``tick()`` is called after each example (``feature_count`` of them)."""
    rng = np.random.default_rng(seed)
    result = {}
    for split in SPLITS:
        if split not in clips.splits:
            result[split] = (np.zeros((0,) + config.shape, np.float32), np.zeros(0, np.int64))
            continue
        waves, y = clips.splits[split]
        x = compute_features(config, waves, tick)
        if split == "train" and aug.copies:
            copies = (augment(waves, aug, rng, config.sample_rate)
                      for _ in range(aug.copies))
            x = np.concatenate([x] + [compute_features(config, c, tick) for c in copies])
            y = np.tile(y, aug.copies + 1)
        result[split] = (x, y)
    return SpeechData(clips.labels, result["train"], result["val"], result["test"])


def feature_count(clips, aug):
    """How many examples ``featurize`` computes features for."""
    return sum(len(y) * (1 + (aug.copies if split == "train" else 0))
               for split, (_, y) in clips.splits.items())


def add_negatives(data, clips, config, aug, negs, seed, user=None, speech_of=None):
    """``data`` (``SpeechData``) with made negatives appended to the training and
    validation splits: the training split's made from training clips only (as many
    as the recipe's fractions of the examples it holds, each once, through the same
    augmentation as the keywords' copies), the validation split's from validation
    clips (not augmented), each from a generator of its own. ``user`` (``(waves,
    is_background)`` of ``--negatives``) joins the training split as it is, at most
    ``negatives.user_cap`` pieces of it, drawn at random. With synthesized negatives
    (``negs.synthesizes``), ``speech_of(split)`` gives each split's ``synth.Speech``
    (its own voices) for ``negatives.from_speech``. Features are computed with
    ``config``."""
    index = {name: data.labels.index(name) for name in negatives.NON_KEYWORDS}
    splits = {}
    for offset, split in enumerate(("train", "val")):
        x, y = getattr(data, split)
        if split not in clips.splits:
            splits[split] = (x, y)
            continue
        waves, keyword_y = clips.splits[split]
        rng = np.random.default_rng([seed, 7919, offset])
        neg_waves, neg_y = negatives.make(waves, keyword_y, len(y), negs,
                                          config.sample_rate, rng,
                                          index[negatives.BACKGROUND],
                                          index[negatives.UNKNOWN])
        if negs.synthesizes:
            made = negatives.from_speech(speech_of(split), waves, keyword_y, len(y), negs,
                                         config.sample_rate, rng, data.labels,
                                         index[negatives.UNKNOWN])
            neg_waves = np.concatenate([neg_waves, made[0]])
            neg_y = np.concatenate([neg_y, made[1]])
        if split == "train":
            if aug.copies:
                neg_waves = augment(neg_waves, aug, rng, config.sample_rate)
            if user is not None:
                keep = np.sort(rng.permutation(len(user[0]))[
                    :negatives.user_cap(negs, len(y))])
                neg_waves = np.concatenate([neg_waves, user[0][keep]])
                neg_y = np.concatenate([neg_y, np.where(
                    user[1][keep], index[negatives.BACKGROUND], index[negatives.UNKNOWN])])
        splits[split] = (np.concatenate([x, compute_features(config, neg_waves)]),
                         np.concatenate([y, neg_y]))
    return SpeechData(data.labels, splits["train"], splits["val"], data.test)


class Corpus:
    """The clips (loaded once per sample rate) and their features (computed once
    per feature configuration and seed): trials and runs share both.
    ``extra_labels`` are outputs no split list holds (a listening version's);
    ``negatives_dir`` a folder of the user's own non-keyword audio."""

    def __init__(self, data_dir, split_dir, seed, splits=SPLITS, labels=None,
                 extra_labels=(), negatives_dir=None):
        self.data_dir, self.split_dir, self.seed = data_dir, split_dir, seed
        self.splits, self.labels = splits, labels
        self.extra_labels, self.negatives_dir = tuple(extra_labels), negatives_dir
        self.clips, self.features, self.noisy, self.user = {}, {}, {}, {}
        self.perturbed = {}  # (config, split) -> the robustness report's features
        self.speech = {}     # (split, plan) -> synth.Speech

    def synthesized(self, split, plan):
        """``synth.Speech`` of ``split``'s voices under ``plan``: synthesized once per
        machine and cached under ``<data_dir>/synth/``."""
        if (split, plan) not in self.speech:
            keywords = [name for name in self.load(synth.RATE).labels
                        if negatives.is_keyword(name)]
            count = plan.words + plan.phrases + plan.keywords_per_label * len(keywords)
            line = progress.Line(f"synthesized speech ({split} voices)", count)
            speech = synth.synthesize(self.data_dir, split, plan, keywords, synth.SEED,
                                      line.advance)
            line.finish(f"synthesized speech ({split} voices): "
                        f"{len(speech.utterances)} utterances, "
                        f"{speech.record['seconds'] / 3600:.1f} h, cache "
                        f"{speech.record['cache']}")
            self.speech[(split, plan)] = speech
        return self.speech[(split, plan)]

    def user_negatives(self, sample_rate):
        """``(waves, is_background, record)`` of ``--negatives`` (None without it)."""
        if self.negatives_dir is None:
            return None
        if sample_rate not in self.user:
            self.user[sample_rate] = negatives.user_negatives(self.negatives_dir,
                                                              sample_rate)
        return self.user[sample_rate]

    def load(self, sample_rate):
        """``speech.Clips`` at ``sample_rate``; the first load fixes the label order."""
        if sample_rate not in self.clips:
            self.clips[sample_rate] = load_splits(self.data_dir, self.split_dir,
                                                  sample_rate, self.splits, self.labels,
                                                  self.extra_labels)
            self.labels = self.clips[sample_rate].labels
        return self.clips[sample_rate]

    def noisy_features(self, config, split):
        """``{(colour, snr): features}`` of ``split`` with the noise report's fixed
        noise added (saturated to full scale), computed once: every seed's model and
        every model of a search share them."""
        key = (config, split)
        if key not in self.noisy:
            waves = self.load(config.sample_rate).splits[split][0]
            line = progress.Line(f"noise report: {split} clips in noise",
                                 len(waves) * len(noise.REPORT_CONDITIONS))
            self.noisy[key] = {
                (colour, snr): compute_features(
                    config, noise.noisy_split(waves, colour, snr, noise.REPORT_SEED),
                    line.advance)
                for colour, snr in noise.REPORT_CONDITIONS}
            line.finish()
        return self.noisy[key]

    def perturbed_features(self, config, split):
        """``{condition: features}`` of ``split`` under each of the robustness report's
        conditions (``robustness.CONDITIONS``, fixed seed), computed once: every
        seed's model and every model of a search share them."""
        from common.kws import robustness
        key = (config, split)
        if key not in self.perturbed:
            waves = self.load(config.sample_rate).splits[split][0]
            line = progress.Line(f"robustness report: {split} clips perturbed",
                                 len(waves) * len(robustness.NAMES))
            self.perturbed[key] = {
                name: compute_features(
                    config, robustness.perturb_split(waves, config.sample_rate, name),
                    line.advance)
                for name in robustness.NAMES}
            line.finish()
        return self.perturbed[key]

    def data(self, recipe):
        """``recipe``'s features of every loaded split (``SpeechData``), the training
        split's augmented copies drawn with the run's seed (shared by --seeds)."""
        negs = getattr(recipe, "negatives", None)  # a listening version's only
        key = (recipe.features, recipe.augmentation, negs, self.negatives_dir)
        if key not in self.features:
            start = time.time()
            clips = self.load(recipe.features.sample_rate)
            what = f"{recipe.features.kind} features {list(recipe.features.shape)}"
            line = progress.Line(what, feature_count(clips, recipe.augmentation))
            self.features[key] = featurize(clips, recipe.features, recipe.augmentation,
                                           self.seed, line.advance)
            if negs is not None:
                user = self.user_negatives(recipe.features.sample_rate)
                self.features[key] = add_negatives(
                    self.features[key], clips, recipe.features, recipe.augmentation,
                    negs, self.seed, user and user[:2],
                    lambda split: self.synthesized(split, negs.synth_plan if split ==
                                                   "train" else dataclasses.replace(
                                                       negs.synth_plan,
                                                       keywords_per_label=0)))
            examples = sum(len(getattr(self.features[key], s)[1]) for s in SPLITS)
            line.finish(f"{what} of {examples} examples in {time.time() - start:.0f} s")
        return self.features[key]
