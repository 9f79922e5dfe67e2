"""Speech that is no keyword, and extra keywords, synthesized with espeak-ng and flite.

A listening spotter must learn to reject other words, above all the ones that sound
like a keyword. Mini Speech Commands holds none, so other speech is made here with
the only two engines the project trains on (Debian packages; other engines and all
recordings stay for held-out checks):

- **the words**: ``/usr/share/dict/words`` (Debian's ``wamerican``), phonemized by
  espeak-ng. A word that sounds like a keyword (the same phonemes: know, write) or
  begins with one (going, upper, stopped: in a stream the keyword is heard whole
  before the rest arrives) is **never** spoken as "no keyword": it is left out
  (``lexicon``). A **sound-alike** is a word one phoneme away from a keyword (yet,
  yell; cup; dawn), measured on espeak-ng's phoneme spelling without stress marks.
- **the voices** are split (``VOICES``): training hears espeak-ng only (every
  English voice it ships, each of its variants, any rate and pitch); validation and
  test hear flite's voices, two and three of them, so the operating point is chosen
  and the figures measured on voices the model never heard.
- **the utterances** (``Plan``): single words (half of them sound-alikes), phrases of
  3-9 words (a third of them sound-alikes) and, for training, the keywords
  themselves, so that a synthetic voice does not come to mean "no keyword".

``synthesize`` makes a split's utterances once per machine under
``<data-dir>/synth/`` (16 kHz int16 and an index), keyed by everything that decides
them: the engines' versions, the word list's checksum, the plan, the seed and
``CACHE_VERSION``. A cache is written to a temporary folder and renamed into place,
so an interrupted synthesis leaves nothing that is taken for a cache.
"""
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from common import artifacts
from common.errors import UserError
from common.kws import audio

CACHE_VERSION = 1
SEED = 2026  # one synthesis per machine, shared by every run and seed
RATE = audio.DATASET_RATE
WORDS_FILE = "/usr/share/dict/words"
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", WORDS_FILE: "wamerican"}
ESPEAK, FLITE = "espeak-ng", "flite"
# the voices each split hears: training never hears a validation or test voice
VOICES = {"train": (ESPEAK, ()),  # () : every English espeak-ng voice and variant
          "val": (FLITE, ("awb", "slt")),
          "test": (FLITE, ("rms", "kal", "kal16"))}
FLITE_PITCH_HZ = {"slt": (150.0, 240.0)}  # others (male voices): DEFAULT_FLITE_PITCH
DEFAULT_FLITE_PITCH_HZ = (85.0, 150.0)
ESPEAK_RATE_WPM = (110, 230)
ESPEAK_PITCH = (10, 90)        # espeak-ng's 0-99 scale
FLITE_STRETCH = (0.75, 1.35)   # flite's duration_stretch: > 1 speaks slower
_WORD = re.compile(r"^[a-z]{2,12}$")
_STRESS = re.compile(r"[',%=_:]")


@dataclass(frozen=True)
class Plan:
    """How many utterances of each kind a split gets."""
    words: int = 3000
    phrases: int = 1500
    keywords_per_label: int = 0      # synthesized keywords (training only)
    phrase_words: tuple = (3, 9)     # words per phrase, inclusive
    soundalike_share_words: float = 0.5
    soundalike_share_phrases: float = 0.33

    def __post_init__(self):
        object.__setattr__(self, "phrase_words", tuple(self.phrase_words))
        if min(self.words, self.phrases, self.keywords_per_label) < 0:
            raise ValueError(f"utterance counts must be >= 0: {self}")


def heldout_plan(minutes):
    """The validation or test split's utterances (in its own voices) for the listening
    audio of ``minutes`` (--listening-minutes): about 5 hours of speech for the
    default hour, so the keyword-free speech (5 x ``minutes``) repeats little."""
    return Plan(words=max(2, math.ceil(minutes * 100 / 3)),
                phrases=max(4, math.ceil(minutes * 100)))


@dataclass(frozen=True)
class Utterance:
    text: str
    kind: str        # "word", "phrase" or "keyword"
    label: str       # the keyword for kind "keyword", else "" (no keyword)
    voice: str       # engine:voice[+variant]
    options: tuple   # the engine's command-line options for rate and pitch


# ---------------------------------------------------------------- engines

def require(name):
    """The path of an engine's program (or the word list); a UserError naming the
    Debian package when it is missing."""
    path = name if os.sep in name else shutil.which(name)
    if (not path or not os.path.exists(path)) and name not in PACKAGES:
        raise UserError(f"the word list {name!r} is missing")
    if not path or not os.path.exists(path):
        raise UserError(f"speech synthesis needs {name}: install the Debian package "
                        f"{PACKAGES[name]} (apt-get install {PACKAGES[name]})")
    return path


def require_all():
    """Both engines and the word list, or a UserError naming the first missing."""
    for name in (ESPEAK, FLITE, WORDS_FILE):
        require(name)


def engine_version(name):
    out = subprocess.run([require(name), "--version"], capture_output=True, text=True,
                         check=False)
    return " ".join((out.stdout or out.stderr).split())[:200]


def espeak_voices():
    """``[voice]``: espeak-ng's English voices that need no MBROLA, and
    ``[variant]``: every variant it ships (a voice's sex, age, breath, roughness)."""
    def listing(kind):
        out = subprocess.run([require(ESPEAK), f"--voices={kind}"], capture_output=True,
                             text=True, check=True).stdout.splitlines()[1:]
        return [line.split()[4] for line in out if len(line.split()) >= 5]
    voices = sorted({f for f in listing("en") if not f.startswith(("mb/", "!v/"))})
    variants = sorted(f.split("/", 1)[1] for f in listing("variant") if f.startswith("!v/"))
    return [v.split("/")[-1] for v in voices], variants


# ---------------------------------------------------------------- the words

def plain_phonemes(phonemes):
    """espeak-ng's phoneme spelling without stress and length marks."""
    return _STRESS.sub("", phonemes)


def phonemize(words, batch=400):
    """``{word: phonemes}`` from espeak-ng (``-x``, US English), many words a call
    (one phoneme word a word; a batch that splits otherwise is done word by word)."""
    program, found = require(ESPEAK), {}
    def run(text):
        return subprocess.run([program, "-q", "-x", "-v", "en-us", text],
                              capture_output=True, text=True, check=True).stdout.split()
    for i in range(0, len(words), batch):
        chunk = list(words[i:i + batch])
        out = run(" ".join(chunk))
        if len(out) != len(chunk):
            out = [" ".join(run(w)) for w in chunk]
        found.update(zip(chunk, out))
    return found


def _one_edit(a, b):
    """Whether ``b`` is ``a`` with one symbol changed, added or removed."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def classify(word, phonemes, keyword_phonemes):
    """``"excluded"`` (a keyword, a homophone of one, or a word that begins with one,
    in spelling or in sound), ``"soundalike"`` (one phoneme symbol from a keyword)
    or ``"other"``. ``keyword_phonemes``: ``{keyword: plain phonemes}``."""
    sound = plain_phonemes(phonemes)
    for keyword, kp in keyword_phonemes.items():
        if word.startswith(keyword) or sound.startswith(kp):
            return "excluded"
    if any(_one_edit(sound, kp) for kp in keyword_phonemes.values()):
        return "soundalike"
    return "other"


def lexicon(keywords, words_file):
    """``{"soundalike": [...], "other": [...], "excluded": [...]}`` over the word
    list's plain lowercase words (2-12 letters), each list sorted."""
    with open(words_file, encoding="utf-8", errors="replace") as f:
        words = sorted({w.strip() for w in f if _WORD.match(w.strip())})
    found = phonemize(words)
    keyword_phonemes = {k: plain_phonemes(p) for k, p in phonemize(list(keywords)).items()}
    groups = {"soundalike": [], "other": [], "excluded": []}
    for word in words:
        groups[classify(word, found[word], keyword_phonemes)].append(word)
    return groups


def cached_lexicon(data_dir, keywords, words_file, words_digest, espeak_version):
    """``lexicon`` once per machine (phonemizing 60 000 words takes a minute), under
    ``<data_dir>/synth/`` keyed by the word list, the keywords and espeak-ng."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, list(keywords), words_digest,
                                     espeak_version]).encode()).hexdigest()[:16]
    path = os.path.join(data_dir, "synth", f"lexicon-{key}.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    groups = lexicon(keywords, words_file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    artifacts.atomic_write_bytes(path, json.dumps(groups).encode())
    return groups


# ---------------------------------------------------------------- the plan

def _voice_draws(split, rng):
    """A function ``() -> (voice name, options)`` drawing a voice of ``split``."""
    engine, names = VOICES[split]
    if engine == ESPEAK:
        voices, variants = espeak_voices()
        if not voices:
            raise UserError("espeak-ng lists no English voice; reinstall espeak-ng")
        def draw():
            voice = voices[int(rng.integers(len(voices)))]
            k = int(rng.integers(len(variants) + 1))
            voice += f"+{variants[k - 1]}" if k else ""
            return f"{ESPEAK}:{voice}", ("-s", str(int(rng.integers(*ESPEAK_RATE_WPM))),
                                         "-p", str(int(rng.integers(*ESPEAK_PITCH))))
        return draw

    def draw():
        voice = names[int(rng.integers(len(names)))]
        pitch = rng.uniform(*FLITE_PITCH_HZ.get(voice, DEFAULT_FLITE_PITCH_HZ))
        return f"{FLITE}:{voice}", (
            "--setf", f"duration_stretch={rng.uniform(*FLITE_STRETCH):.3f}",
            "--setf", f"int_f0_target_mean={pitch:.1f}")
    return draw


def plan_utterances(split, plan, groups, keywords, seed):
    """The utterances of ``split`` (``Utterance``), drawn from ``seed``."""
    rng = np.random.default_rng([seed, sorted(VOICES).index(split)])
    voice = _voice_draws(split, rng)
    alike, other = groups["soundalike"], groups["other"]
    if not other:
        raise UserError(f"{WORDS_FILE} holds no usable word")
    alike = alike or other

    def pick(share):
        pool = alike if rng.random() < share else other
        return pool[int(rng.integers(len(pool)))]

    out = []
    for _ in range(plan.words):
        out.append(Utterance(pick(plan.soundalike_share_words), "word", "", *voice()))
    for _ in range(plan.phrases):
        n = int(rng.integers(plan.phrase_words[0], plan.phrase_words[1] + 1))
        text = " ".join(pick(plan.soundalike_share_phrases) for _ in range(n))
        out.append(Utterance(text, "phrase", "", *voice()))
    for keyword in keywords:
        for _ in range(plan.keywords_per_label):
            out.append(Utterance(keyword, "keyword", keyword, *voice()))
    return out


# ---------------------------------------------------------------- synthesis

def fft_resample(signal, from_rate, to_rate):
    """Band-limited resampling of a short signal through its spectrum (an
    utterance of a few seconds: exact and fast at any ratio)."""
    if from_rate == to_rate or len(signal) == 0:
        return np.asarray(signal, np.float32)
    n_out = int(round(len(signal) * to_rate / from_rate))
    spectrum = np.fft.rfft(np.asarray(signal, np.float64))
    keep = n_out // 2 + 1
    spectrum = spectrum[:keep] if len(spectrum) >= keep else np.pad(
        spectrum, (0, keep - len(spectrum)))
    return (np.fft.irfft(spectrum, n_out) * (n_out / len(signal))).astype(np.float32)


def _say(utterance, folder, index):
    """One utterance as float32 at ``RATE``."""
    engine, voice = utterance.voice.split(":", 1)
    path = os.path.join(folder, f"{index}.wav")
    if engine == ESPEAK:
        command = [require(ESPEAK), "-v", voice, *utterance.options, "-w", path,
                   utterance.text]
    else:
        command = [require(FLITE), "-voice", voice, *utterance.options, "-t",
                   utterance.text, "-o", path]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not os.path.exists(path):
        raise UserError(f"{engine} failed on {utterance.text!r} ({voice}): "
                        f"{(done.stderr or '').strip()[:200]}")
    signal, rate = audio.read_wav_any(path)
    os.unlink(path)
    return fft_resample(signal, rate, RATE)


def cache_key(split, plan, keywords, seed, versions, words_digest):
    text = json.dumps({"version": CACHE_VERSION, "split": split, "plan": asdict(plan),
                       "keywords": list(keywords), "seed": seed, "engines": versions,
                       "voices": VOICES[split], "words_sha256": words_digest},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Speech:
    """A split's synthesized utterances: ``audio`` int16 at ``RATE``, each
    utterance ``audio[start:start + length]``."""
    audio: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    utterances: list     # Utterance
    record: dict         # what the JSON records: cache, engines, voices, counts

    def signal(self, i):
        s = int(self.starts[i])
        return self.audio[s:s + int(self.lengths[i])].astype(np.float32) / 32768.0

    def others(self):
        """Indices of the utterances that say no keyword (the words and phrases)."""
        return [i for i, u in enumerate(self.utterances) if u.kind != "keyword"]

    def indices(self, kind=None, label=None):
        return [i for i, u in enumerate(self.utterances)
                if (kind is None or u.kind == kind) and (label is None or u.label == label)]


def _record(split, key, utterances, lengths, versions):
    kinds = {}
    for u in utterances:
        kinds[u.kind] = kinds.get(u.kind, 0) + 1
    return {"split": split, "cache": key[:16], "engines": versions,
            "voices": sorted({u.voice for u in utterances}), "utterances": kinds,
            "seconds": round(float(np.sum(lengths)) / RATE, 1)}


def synthesize(data_dir, split, plan, keywords, seed, tick=None, words_file=None):
    """``Speech`` of ``split``, from ``<data_dir>/synth/`` when a cache with the same
    inputs exists, else synthesized (two engine processes at a time) and cached."""
    engine = VOICES[split][0]
    versions = {engine: engine_version(engine)}
    if engine != ESPEAK:
        versions[ESPEAK] = engine_version(ESPEAK)  # phonemizes the word list
    words_file = words_file or WORDS_FILE
    with open(require(words_file), "rb") as f:
        words_digest = hashlib.sha256(f.read()).hexdigest()
    key = cache_key(split, plan, keywords, seed, versions, words_digest)
    folder = os.path.join(data_dir, "synth", f"{split}-{key[:16]}")
    if os.path.isfile(os.path.join(folder, "index.json")):
        return load(folder)
    groups = cached_lexicon(data_dir, keywords, words_file, words_digest,
                            versions[ESPEAK])
    utterances = plan_utterances(split, plan, groups, keywords, seed)
    os.makedirs(os.path.join(data_dir, "synth"), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.join(data_dir, "synth"), prefix=".partial-")
    os.chmod(staging, 0o755)  # mkdtemp's 0700: the cache is meant to be shared
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(_say, u, staging, i) for i, u in enumerate(utterances)]
            signals = []
            for f in futures:
                signals.append(f.result())
                if tick is not None:
                    tick()
        lengths = np.array([len(s) for s in signals], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        pcm = np.round(np.clip(np.concatenate(signals or [np.zeros(0)]), -1, 1 - 2 ** -15)
                       * 32768).astype(np.int16)
        np.save(os.path.join(staging, "audio.npy"), pcm)
        index = {"record": _record(split, key, utterances, lengths, versions),
                 "lexicon": {g: len(w) for g, w in groups.items()},
                 "excluded_sample": groups["excluded"][:200],
                 "utterances": [[u.text, u.kind, u.label, u.voice, list(u.options),
                                 int(s), int(n)]
                                for u, s, n in zip(utterances, starts, lengths)]}
        with open(os.path.join(staging, "index.json"), "w") as f:
            json.dump(index, f)
        try:
            os.replace(staging, folder)
        except OSError:  # another run cached the same inputs meanwhile: keep theirs
            if not os.path.isfile(os.path.join(folder, "index.json")):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load(folder)


def load(folder):
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    rows = index["utterances"]
    utterances = [Utterance(t, k, lab, v, tuple(o)) for t, k, lab, v, o, _, _ in rows]
    record = dict(index["record"], lexicon=index["lexicon"])
    return Speech(np.load(os.path.join(folder, "audio.npy"), mmap_mode="r"),
                  np.array([r[5] for r in rows], np.int64),
                  np.array([r[6] for r in rows], np.int64), utterances, record)
