"""Synthetic data made in the tests: no internet, no ../shared."""
import datetime
import math
import os
import random
import signal
import struct
import sys
import time
import wave

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# Started as a background job (``pytest &``, ``nohup``), the suite inherits Ctrl-C
# ignored, and so would every script it starts: by design those keep ignoring it, and
# the tests of what Ctrl-C does would fail. They test a foreground run.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LABELS = ["down", "go", "left", "no", "right", "stop", "up", "yes"]
TF_TURNS_A_SIGNAL_INTO = ("SystemError", "UserError", "nothing (swallowed)")


def signal_lost_in_tensorflow(signum, tf_turns_it_into):
    """Send this process ``signum`` (as Ctrl-C or kill would) while "inside TensorFlow",
    whose C layer turns the handler's exception into a SystemError or swallows it
    (one of ``TF_TURNS_A_SIGNAL_INTO``; a UserError: what the runtime layer makes of
    the interpreter's errors)."""
    from common.errors import UserError
    try:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler interrupts the sleep
    except KeyboardInterrupt as err:
        if tf_turns_it_into == "SystemError":
            raise SystemError("<built-in function __import__> returned a result with "
                              "an exception set") from err
        if tf_turns_it_into == "UserError":
            raise UserError("the interpreter failed") from err
START = datetime.datetime(2024, 1, 1)  # the synthetic CSVs' first 'Date Time'


def write_jena_csv(path, rows, seed=0, columns=("T (degC)", "rh (%)")):
    """A CSV shaped like the station export: daily cycles plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    temp = 15 + 8 * np.sin(2 * np.pi * t / 144) + rng.normal(0, 0.3, rows)
    rh = 70 - 20 * np.sin(2 * np.pi * t / 144) + rng.normal(0, 1.0, rows)
    with open(path, "w", encoding="latin-1") as f:
        f.write("Date Time,p (mbar)," + ",".join(columns) + "\n")
        for i in range(rows):  # 10-minute rows, as the station's
            stamp = START + datetime.timedelta(minutes=10 * i)
            f.write(f"{stamp:%d.%m.%Y %H:%M:%S},990.0,{temp[i]:.2f},{rh[i]:.2f}\n")
    return path


def write_wav(path, samples, rate=16000, channels=1):
    """16-bit PCM WAV (samples in [-1, 1], clipped; channels interleaved)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(np.asarray(samples, float), -1, 1) * 32767)
                      .astype("<i2").tobytes())


def wav_extensible_bytes(samples, rate=16000, channels=1, bits=16, subformat=1,
                         leading_chunk=b""):
    """A WAVE_FORMAT_EXTENSIBLE file (format tag 0xFFFE), built by hand since Python
    3.11's ``wave`` cannot write one. ``subformat`` is the code in the SubFormat GUID
    (1 PCM, 3 IEEE float); ``leading_chunk`` is a whole chunk put before ``fmt ``."""
    width = bits // 8
    scale = 2 ** (bits - 1) - 1
    data = b"".join(int(max(-1, min(1, s)) * scale).to_bytes(width, "little", signed=True)
                    for s in samples)
    guid = struct.pack("<H", subformat) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * channels * width,
                      channels * width, bits, 22, bits, 4 if channels == 1 else 3) + guid
    body = (b"WAVE" + leading_chunk + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq, seconds=1.0, rate=16000, amplitude=0.5):
    return [amplitude * math.sin(2 * math.pi * freq * i / rate)
            for i in range(int(seconds * rate))]


@pytest.fixture
def jena_csv(tmp_path):
    return str(write_jena_csv(tmp_path / "jena.csv", 600))


@pytest.fixture
def speech_dir(tmp_path):
    """A tiny Mini-Speech-Commands look-alike: one tone per label, with split lists."""
    data = tmp_path / "speechdata"
    splits = {"train": 3, "val": 1, "test": 1}
    lines = {s: [] for s in splits}
    for k, label in enumerate(LABELS):
        n = 0
        for split, count in splits.items():
            for _ in range(count):
                name = f"clip{n}_nohash_0.wav"
                # slightly shorter than 1 s: exercises the zero padding
                write_wav(str(data / "mini_speech_commands" / label / name),
                          tone(300 + 250 * k + 20 * n, seconds=0.9))
                lines[split].append(f"./data/mini_speech_commands/{label}/{name}")
                n += 1
    rng = random.Random(0)
    for split, entries in lines.items():
        rng.shuffle(entries)  # the real lists are not sorted by label either
        (data / f"kws_{split}_split.txt").write_text("\n".join(entries) + "\n")
    return data


# A small word list for speech synthesis: the dictionary's 60 000 words take a minute
# to phonemize. Keywords, homophones, words that begin with a keyword, sound-alikes.
TEST_WORDS = ("down go left no right stop up yes know write going upper stopped yet "
              "yell lift let top step town dawn cup of show low table window garden "
              "music paper river orange simple little morning yellow happy number "
              "silver kitchen pocket").split()
ENGINES_MISSING = [name for name in ("espeak-ng", "flite") if not __import__(
    "shutil").which(name)]
needs_engines = pytest.mark.skipif(bool(ENGINES_MISSING), reason=(
    f"speech synthesis needs {' and '.join(ENGINES_MISSING)} (apt-get install "
    f"{' '.join(ENGINES_MISSING)}); CI installs them"))


@pytest.fixture(scope="session", autouse=True)
def small_word_list(tmp_path_factory):
    """Every test synthesizes from ``TEST_WORDS`` (synth.WORDS_FILE)."""
    from common.kws import synth
    path = tmp_path_factory.mktemp("words") / "words"
    path.write_text("\n".join(TEST_WORDS) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth, "WORDS_FILE", str(path))
        yield str(path)


def made_speech(count=6, seconds=(0.4, 2.5), seed=0, kind="word"):
    """A ``synth.Speech`` of ``count`` noise-burst "utterances" (no engine needed)."""
    from common.kws import synth
    rng = np.random.default_rng(seed)
    pieces = [(0.2 * rng.standard_normal(int(rng.uniform(*seconds) * synth.RATE)))
              .clip(-1, 1) for _ in range(count)]
    lengths = np.array([len(p) for p in pieces], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    pcm = (np.concatenate(pieces) * 32767).astype(np.int16)
    utterances = [synth.Utterance(f"w{i}", kind, "", "made:noise", ()) for i in range(count)]
    return synth.Speech(pcm, starts, lengths, utterances, {"cache": "made"})
