"""Listening on a stream: the scoring rule, the detector (offline and live forms),
resampling of long recordings, the made negatives, --negatives, the detector
settings a model records, and kws_detect.py end to end on a tone fixture."""
import dataclasses
import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest

from conftest import ENGINES_MISSING, LABELS, ROOT, made_speech, write_wav
from common.errors import UserError
from common.kws import audio, negatives, speech, stream


# --- the scoring rule ---------------------------------------------------------

def test_scoring_rule_counts_hits_wrong_labels_and_false_alarms():
    words = [(1.0, 1.5, 0), (10.0, 10.6, 1)]
    result = stream.score([(2.24, 0, 0.9),    # 0.74 s after the end: a hit
                           (2.26, 0, 0.9),    # 0.76 s after: outside, a false alarm
                           (10.3, 0, 0.9),    # inside word 2, wrong label
                           (10.5, 1, 0.9),    # word 2 hit
                           (10.9, 1, 0.9),    # word 2 again: at most one hit per word
                           (30.0, 1, 0.9)],   # nowhere near a word
                          words, duration_s=3600)
    assert result["hits"] == 2 and result["hit_rate"] == 1.0
    assert result["false_alarms"] == 4 and result["false_alarms_per_hour"] == 4.0
    assert result["wrong_labels"] == 1
    assert result["latency_median_ms"] == pytest.approx(1000 * np.median([0.74, -0.1]))


def test_scoring_rule_rejects_a_detection_just_past_the_window():
    late = stream.score([(1.5 + 0.76, 0, 1.0)], [(1.0, 1.5, 0)], 60)
    in_time = stream.score([(1.5 + 0.74, 0, 1.0)], [(1.0, 1.5, 0)], 60)
    assert (late["hits"], late["false_alarms"]) == (0, 1)
    assert (in_time["hits"], in_time["false_alarms"]) == (1, 0)


# --- the detector: offline and live forms agree -------------------------------

class FakeRunner:
    """Logits from the features: class 0 loud, class 1 quiet, class 2 background."""

    def __call__(self, features):
        level = float(np.mean(features))
        return np.array([level, -level, 0.5 * level], np.float32)


def test_listener_fed_in_pieces_matches_offline_detection():
    rng = np.random.default_rng(0)
    config = audio.FeatureConfig()
    signal = np.zeros(16000 * 12, np.float32)
    for start in (2, 6, 9):
        signal[start * 16000:start * 16000 + 8000] = 0.5 * rng.standard_normal(8000)
    signal += 1e-3 * rng.standard_normal(len(signal)).astype(np.float32)
    labels = ["a", "b", negatives.BACKGROUND]
    settings = stream.DetectorSettings(hop_s=0.1, average_s=0.3, threshold=0.5,
                                       suppression_s=1.0)
    probs = stream.hop_probabilities(FakeRunner(), config, signal, settings.hop_s)
    offline = stream.detect(probs, settings, np.array([True, True, False]))
    listener = stream.Listener(FakeRunner(), config, labels, settings)
    live, at = [], 0
    while at < len(signal):
        size = int(rng.integers(1, 5000))
        live += listener.feed(signal[at:at + size])
        at += size
    assert offline, "the fixture must fire"
    assert [(t, l) for t, l, _ in live] == [(t, l) for t, l, _ in offline]
    assert np.allclose([s for *_, s in live], [s for *_, s in offline], atol=1e-5)
    assert listener.seconds == pytest.approx(len(probs) * settings.hop_s)


def test_background_outputs_never_fire():
    probs = np.tile(np.array([[0.05, 0.05, 0.9]], np.float32), (30, 1))
    settings = stream.DetectorSettings(threshold=0.5)
    assert stream.detect(probs, settings, np.array([True, True, False])) == []
    assert stream.detect(probs, settings, np.array([True, True, True]))


def test_suppression_keeps_detections_apart():
    probs = np.tile(np.array([[1.0, 0.0]], np.float32), (50, 1))
    found = stream.detect(probs, stream.DetectorSettings(threshold=0.5, suppression_s=1.0),
                          np.array([True, True]))
    times = [t for t, _, _ in found]
    assert times == pytest.approx([0.1, 1.1, 2.1, 3.1, 4.1])


def test_smoothing_averages_the_last_hops():
    probs = np.array([[0.0], [1.0], [1.0], [1.0]], np.float32)
    assert stream.smooth(probs, 2)[:, 0] == pytest.approx([0.0, 0.5, 1.0, 1.0])


# --- resampling a long recording ------------------------------------------------

@pytest.mark.parametrize("rates", [(44100, 16000), (8000, 16000), (48000, 16000)])
def test_resample_long_equals_the_one_shot_resampler(rates):
    rng = np.random.default_rng(1)
    signal = rng.standard_normal(int(rates[0] * 1.7)).astype(np.float32)
    long = audio.resample_long(signal, *rates, block_outputs=3000)
    assert long.shape == audio.resample(signal, *rates).shape
    assert np.allclose(long, audio.resample(signal, *rates), atol=1e-5)


@pytest.mark.parametrize("rate, channels", [(44100, 2), (16000, 1), (8000, 3)])
def test_wav_pieces_are_the_whole_file_resampled(tmp_path, rate, channels):
    rng = np.random.default_rng(2)
    path = str(tmp_path / "rec.wav")
    write_wav(path, list(rng.uniform(-0.9, 0.9, int(rate * 3.3) * channels)), rate=rate,
              channels=channels)
    pieces = list(audio.wav_pieces(path, 16000))
    whole, file_rate = audio.read_wav_any(path)
    assert max(len(p) for p in pieces) <= 16000 and len(pieces) >= 3
    assert np.array_equal(np.concatenate(pieces), audio.resample_long(whole, file_rate,
                                                                      16000))


def test_a_long_recording_is_listened_to_without_reading_it_into_memory(tmp_path):
    """kws_detect maps the file and converts a piece at a time: the memory a
    recording costs does not grow with its length (a Raspberry Pi's hours of audio)."""
    import tracemalloc

    def recording(seconds, rate=48000):
        path = str(tmp_path / f"{seconds}s.wav")
        with wave.open(path, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.random.default_rng(0).integers(
                -3000, 3000, seconds * rate * 2).astype("<i2").tobytes())
        return path

    def peak(consume):
        tracemalloc.start()
        consume()
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes
    short, long = recording(15), recording(60)  # 2.9 and 11.5 MB
    streamed = [peak(lambda: sum(len(p) for p in audio.wav_pieces(path, 16000)))
                for path in (short, long)]
    assert streamed[1] < 1.2 * streamed[0] and streamed[1] < os.path.getsize(long) / 10
    whole = peak(lambda: audio.read_wav_any(long))  # what the detector did before
    assert whole > 3 * os.path.getsize(long)


@pytest.mark.parametrize("when", ["before its header is read again", "between pieces"])
def test_a_recording_that_shrinks_while_it_is_read_is_an_error_not_a_crash(tmp_path,
                                                                          when):
    """Reading the lost pages of a mapped file kills the process (SIGBUS): the file's
    size is checked before the header is parsed (kws_detect maps the file, then loads
    TensorFlow) and before each piece (in a child process, as the crash would take
    the tests with it)."""
    path = str(tmp_path / "rec.wav")
    write_wav(path, [0.1] * 16000 * 5)
    early = when.startswith("before")
    script = ("import os, sys; sys.path.insert(0, {root!r})\n"
              "from common.kws import audio\n"
              "from common.errors import UserError\n"
              "mapped = audio.read_file({path!r}, mapped=True)\n"
              "try:\n"
              "    if {early}:\n"
              "        os.truncate({path!r}, 0)\n"
              "    pieces = audio.wav_pieces({path!r}, 16000, mapped)\n"
              "    next(pieces)\n"
              "    os.truncate({path!r}, 44)\n"
              "    list(pieces)\n"
              "except UserError as err:\n"
              "    print(err)\n").format(root=ROOT, path=path, early=early)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert result.stdout == (f"{path!r} shrank while it was being read (to "
                             f"{0 if early else 44} bytes); give a file no one is "
                             "rewriting\n")


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    """Some file systems (FUSE with direct I/O) and a 32-bit address space refuse a
    mapping; the file is then read as it always was."""
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")
    path = tmp_path / "rec.wav"
    write_wav(str(path), [0.1] * 1600)
    monkeypatch.setattr(mmap, "mmap", refuse)
    assert audio.read_file(str(path), mapped=True) == path.read_bytes()


# --- the made negatives -------------------------------------------------------

def test_made_negatives_are_labelled_and_counted():
    rng = np.random.default_rng(0)
    clips = rng.uniform(-0.5, 0.5, (8, 16000)).astype(np.float32)
    y = np.arange(8) % 4
    waves, labels = negatives.make(clips, y, 100, negatives.Negatives(), 16000, rng, 8, 9)
    assert waves.shape == (30, 16000)
    assert list(labels) == [8] * 10 + [9] * 20


@pytest.mark.parametrize("kind", ["partial", "splice", "reverse"])
def test_unknown_speech_comes_only_from_the_given_clips(kind):
    """Train clips hold positive values only, the others negative: a made example
    holds no value the given clips lack."""
    rng = np.random.default_rng(2)
    train = rng.uniform(0.1, 0.9, (6, 16000)).astype(np.float32)
    waves, kinds = negatives.unknown(train, np.arange(6), 20, 16000,
                                     negatives.Negatives(), rng, kinds=(kind,))
    assert set(kinds) == {kind}
    assert (waves >= 0).all() and (waves > 0).any()
    assert np.isin(waves[waves > 0], train).all()


def test_stretched_speech_changes_length():
    rng = np.random.default_rng(3)
    word = np.zeros(16000, np.float32)
    word[4000:8000] = 0.5 * np.sin(np.arange(4000) * 0.3)
    out = negatives.stretch(word, word, 16000, negatives.Negatives(
        stretch_factors=((1.5, 1.5),)), rng)
    start, end = negatives.active_region(out, 16000)
    assert (end - start) == pytest.approx(6000, abs=300)


def corpus_of(splits):
    """A ``speech.Clips`` whose splits are tagged by sign: train clips positive,
    validation and test clips negative."""
    rng = np.random.default_rng(4)
    made = {}
    for split in splits:
        sign = 1 if split == "train" else -1
        made[split] = (sign * rng.uniform(0.1, 0.9, (8, 16000)).astype(np.float32),
                       np.arange(8) % 2)
    return speech.Clips(["a", "b", *negatives.NON_KEYWORDS], made,
                        {s: "" for s in splits})


def test_training_negatives_never_draw_from_validation_or_test_clips(monkeypatch):
    clips = corpus_of(speech.SPLITS)
    drawn = []
    real = negatives.make

    def spy(waves, *args, **kwargs):
        drawn.append(waves)
        return real(waves, *args, **kwargs)
    monkeypatch.setattr(negatives, "make", spy)
    config = audio.FeatureConfig()
    data = speech.featurize(clips, config, speech.Augmentation(), 0)
    neg = negatives.Negatives(unknown_kinds=("partial", "splice", "reverse"))
    result = speech.add_negatives(data, clips, config, speech.Augmentation(), neg, 0)
    assert drawn[0] is clips.splits["train"][0] and drawn[1] is clips.splits["val"][0]
    # labels stay aligned: keywords first, then background (2), then unknown (3)
    assert list(result.train[1]) == list(data.train[1]) + [2] + [3, 3]
    assert list(result.val[1]) == list(data.val[1]) + [2] + [3, 3]
    assert result.test[1].tolist() == data.test[1].tolist()
    assert len(result.train[0]) == len(result.train[1])


# --- --negatives ----------------------------------------------------------------

def test_user_negatives_are_cut_into_pieces_and_labelled(tmp_path):
    write_wav(str(tmp_path / "_background_noise_" / "hum.wav"),
              list(0.1 * np.sin(np.arange(8000 * 5 // 2) * 0.05)), rate=8000)
    write_wav(str(tmp_path / "words" / "cat.wav"), list(0.3 * np.ones(11200)))
    write_wav(str(tmp_path / "words" / "tick.wav"), list(0.3 * np.ones(4000)))
    waves, background, record = negatives.user_negatives(str(tmp_path), 16000)
    assert waves.shape == (4, 16000)          # 2.5 s -> 3 pieces, 0.7 s -> 1, 0.25 s -> 0
    assert background.tolist() == [True, True, True, False]
    assert record["files"] == 3 and record["pieces"] == 4 and len(record["sha256"]) == 64
    again = negatives.user_negatives(str(tmp_path), 16000)[2]
    assert again["sha256"] == record["sha256"]
    (tmp_path / "_background_noise_" / "README.md").write_text("notes")
    _, background, record = negatives.user_negatives(str(tmp_path / "_background_noise_"),
                                                     16000)
    assert background.all() and record["skipped_files"] == 1  # the folder itself counts


def test_user_negatives_refuse_an_empty_folder_and_a_non_wav_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no WAV files"):
        negatives.user_negatives(str(tmp_path / "empty"), 16000)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.wav").write_text("not audio")
    with pytest.raises(UserError, match="not a readable WAV"):
        negatives.user_negatives(str(tmp_path / "junk"), 16000)
    with pytest.raises(UserError, match="not a folder"):
        negatives.user_negatives(str(tmp_path / "missing"), 16000)


# --- recordings ----------------------------------------------------------------

def test_recordings_use_every_clip_once_and_keep_events_off_the_words():
    rng = np.random.default_rng(5)
    clips = np.zeros((20, 16000), np.float32)
    clips[:, 4000:10000] = 0.3 * rng.standard_normal((20, 6000))
    y = np.arange(20) % 4
    a = stream.make_recording("s", clips, y, 16000, None, np.random.default_rng(7))
    b = stream.make_recording("s", clips, y, 16000, None, np.random.default_rng(7))
    assert np.array_equal(a.signal, b.signal) and a.words == b.words
    assert len(a.words) == 20 and sorted(w[2] for w in a.words) == sorted(y)
    assert a.events and {kind for *_, kind in a.events} <= set(stream.EVENTS)
    for start, end, _ in a.events:
        for w_start, w_end, _ in a.words:
            assert end <= w_start or start >= w_end + stream.HIT_WINDOW_S - 1e-6
    starts = np.diff([w[0] for w in a.words])
    assert starts.min() >= 2.0 - 0.01 and starts.max() <= 5.0 + 0.01
    assert a.words[-1][1] < a.seconds
    quiet = stream.make_recording("q", clips, y, 16000, 30.0, rng, keywords=False)
    assert quiet.seconds == 30.0 and not quiet.words and len(quiet.events) >= 6


def test_no_event_is_a_kind_the_listening_version_trains_on():
    assert not set(stream.EVENTS) & set(negatives.UNKNOWN_KINDS)


def test_the_report_listens_only_to_the_split_it_is_given(monkeypatch):
    """The test audio is made from the clips passed (the test split's), never from
    another split: every sample of a keyword-free recording with events but no
    noise comes from those clips' words or the event generators."""
    made = []
    real = stream.make_recording

    def spy(name, clips, *args, **kwargs):
        made.append(clips)
        return real(name, clips, *args, **kwargs)
    monkeypatch.setattr(stream, "make_recording", spy)
    clips = np.full((4, 16000), 0.1, np.float32)
    stream.listen_to(FakeRunner(), audio.FeatureConfig(), (clips, np.arange(4)),
                     stream.REPORT_RECORDINGS, 0.2, 1, "test", speech=made_speech())
    assert len(made) == len(stream.REPORT_RECORDINGS)
    assert all(m is clips for m in made)


def test_choosing_settings_prefers_hits_within_the_false_alarm_cap():
    """Two averaging spans' worth of made probabilities: a word every 30 hops, and
    a false alarm source every 300 hops whose score is below 0.95."""
    hops = 36000  # an hour at 0.1 s
    probs = np.zeros((hops, 2), np.float32)
    probs[:, 1] = 1.0
    words = []
    for n, k in enumerate(range(100, hops - 100, 300)):
        sure = 1.0 if n % 2 else 0.85          # a word's hops: keyword 0
        probs[k:k + 8] = [sure, 1 - sure]
        words.append(((k - 5) * 0.1, (k + 3) * 0.1, 0))
        probs[k + 150:k + 158] = [0.9, 0.1]  # something else, 0.9 sure
    rec = stream.Recording("stream", np.zeros(hops * 1600, np.int8), 16000, tuple(words), ())
    settings, point, held = stream.choose_settings({"stream": probs}, [rec],
                                                   np.array([True, False]))
    assert held and settings.threshold > 0.9 and point["stream"]["hit_rate"] == 0.5
    # nothing can stay within the cap: the fewest false alarms, not the most hits
    for k in range(100, hops - 100, 300):
        probs[k + 50:k + 58] = [1.0, 0.0]  # sure false alarms, whatever the threshold
    settings, point, held = stream.choose_settings({"stream": probs}, [rec],
                                                   np.array([True, False]))
    assert not held and settings.threshold > 0.9 and point["stream"]["hit_rate"] == 0.5


def test_detect_with_no_suppression_fires_every_hop_like_the_listener():
    probs = np.tile(np.array([[1.0, 0.0]], np.float32), (5, 1))
    settings = stream.DetectorSettings(threshold=0.5, suppression_s=0.0)
    assert len(stream.detect(probs, settings, np.array([True, True]))) == 5


# --- the settings a model records ------------------------------------------------

def test_detector_settings_round_trip_through_text():
    settings = stream.DetectorSettings(hop_s=0.2, average_s=0.8, threshold=0.73,
                                       suppression_s=1.5)
    assert stream.DetectorSettings.from_text(settings.to_text(), "m") == settings
    with pytest.raises(UserError, match="damaged 'detector'"):
        stream.DetectorSettings.from_text('{"hop": 1}', "m")


# --- kws_detect.py end to end -------------------------------------------------------

TONE_HZ = {label: 400 + 400 * k for k, label in enumerate(LABELS)}


def tone_recording(path, rate=16000):
    """12 s of quiet noise with three tone words at known times."""
    rng = np.random.default_rng(6)
    signal = 0.002 * rng.standard_normal(12 * rate)
    words = [(2.0, "go"), (6.0, "stop"), (9.0, "yes")]
    for start, label in words:
        t = np.arange(int(0.7 * rate)) / rate
        signal[int(start * rate):int(start * rate) + len(t)] += (
            0.4 * np.sin(2 * np.pi * TONE_HZ[label] * t))
    write_wav(str(path), list(signal), rate=rate)
    return [(start, start + 0.7, label) for start, label in words]


@pytest.fixture(scope="module")
def listening_model(tmp_path_factory, small_word_list):
    """Version e trained on the separable tone fixture (made negatives: background
    only, since a reversed or partial tone is the same tone)."""
    if ENGINES_MISSING:  # the listening report's speech is synthesized
        pytest.skip(f"needs {' and '.join(ENGINES_MISSING)} (apt-get install)")
    from common.tflite import micro
    if not micro.available():  # e's arena budget is measured by TFLM
        pytest.skip("training e needs tflite-micro (requirements-micro.txt)")
    import kws_train
    from test_model_guards import kws_argv, tone_dataset
    from common.cli import run_main
    root = tmp_path_factory.mktemp("listen")
    data_dir = tone_dataset(root / "speech", {"train": 6, "val": 2, "test": 2})
    recipe = dataclasses.replace(kws_train.RECIPES["e"], negatives=negatives.Negatives(
        unknown_fraction=0.0, unknown_kinds=(), silence_fraction=0.3),
        augmentation=speech.Augmentation(copies=3))  # tones: no wide shift
    saved = kws_train.RECIPES["e"]
    kws_train.RECIPES["e"] = recipe
    try:
        with pytest.raises(SystemExit):
            run_main(kws_train.main, ["--version", "e", *kws_argv(
                data_dir, root / "out", "--epochs", "30", "--alpha", "0.2")])
    finally:
        kws_train.RECIPES["e"] = saved
    return root / "out" / "kws_e.tflite.zlib"


def detect_cli(*args, stdin=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "kws_detect.py"), *args],
                          capture_output=True, text=stdin is None, input=stdin, cwd=ROOT,
                          timeout=300)


def test_listening_model_records_its_outputs_and_settings(listening_model):
    spotter = stream.read_spotter(str(listening_model))
    assert spotter.labels == LABELS + list(negatives.NON_KEYWORDS)
    assert spotter.listens and spotter.settings is not None
    report = json.loads(listening_model.with_suffix("").with_suffix(".json").read_text())
    assert report["listening"]["settings"] == dataclasses.asdict(spotter.settings)
    assert report["listening"]["settings_source"] == "model metadata"
    assert report["data"]["negatives"]["examples"]["train"][negatives.BACKGROUND] > 0


def test_detector_reads_a_recording_from_a_pipe_once(listening_model, tmp_path):
    """``kws_detect.py model <(sox ...)``: the file is a pipe, which can be read once."""
    import threading
    tone_recording(tmp_path / "rec.wav")
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write((tmp_path / "rec.wav").read_bytes())
    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "kws_detect.py"), str(listening_model),
             f"/dev/fd/{read_end}", "--json", "--threshold", "0.6", "--average", "0.3",
             "--suppression", "1.5"],
            capture_output=True, text=True, cwd=ROOT, timeout=300, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        writer.join()
    assert result.returncode == 0, result.stderr
    assert [d["label"] for d in json.loads(result.stdout)] == ["go", "stop", "yes"]
    assert "processed 12.0 s of audio" in result.stderr


def test_the_detector_stops_at_once_after_a_signal_lost_while_the_model_loaded(
        listening_model, tmp_path):
    import kws_detect
    from common.errors import Terminated, remember_stop, stop_handlers
    tone_recording(tmp_path / "rec.wav")
    spotter = stream.read_spotter(str(listening_model))
    with stop_handlers():
        remember_stop(Terminated())  # its raising lost inside TensorFlow
        found, listener, _, stopped = kws_detect.listen(
            spotter, spotter.settings, str(tmp_path / "rec.wav"), None, True)
    assert isinstance(stopped, Terminated) and found == [] and listener.seconds == 0


def test_detector_finds_each_tone_word_and_nothing_between(listening_model, tmp_path):
    words = tone_recording(tmp_path / "rec.wav")
    result = detect_cli(str(listening_model), str(tmp_path / "rec.wav"), "--json",
                        "--threshold", "0.6", "--average", "0.3", "--suppression", "1.5")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [d["label"] for d in found] == [label for *_, label in words]
    for d, (start, end, _) in zip(found, words):
        assert start <= d["time_s"] <= end + stream.HIT_WINDOW_S
    assert "processed 12.0 s of audio" in result.stderr
    lines = detect_cli(str(listening_model), str(tmp_path / "rec.wav"), "--threshold",
                       "0.6", "--average", "0.3", "--suppression", "1.5")
    assert lines.stdout.splitlines()[0] == (f"{found[0]['time_s']:.2f}  "
                                            f"{found[0]['label']}  {found[0]['score']:.2f}")

    # the same audio as raw PCM on standard input: the same detections
    with wave.open(str(tmp_path / "rec.wav"), "rb") as w:
        raw = w.readframes(w.getnframes())
    piped = detect_cli(str(listening_model), "-", "--json", "--threshold", "0.6",
                       "--average", "0.3", "--suppression", "1.5", stdin=raw)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == found

    # at 8 kHz: resampled to the model's 16 kHz, the same words at the same times
    tone_recording(tmp_path / "rec8k.wav", rate=8000)
    resampled = detect_cli(str(listening_model), str(tmp_path / "rec8k.wav"), "--json",
                           "--threshold", "0.6", "--average", "0.3", "--suppression", "1.5")
    assert resampled.returncode == 0, resampled.stderr
    again = json.loads(resampled.stdout)
    assert [d["label"] for d in again] == [d["label"] for d in found]
    assert np.allclose([d["time_s"] for d in again], [d["time_s"] for d in found],
                       atol=0.21)


def test_detector_bad_input_is_one_error_line(listening_model, tmp_path):
    (tmp_path / "notes.wav").write_text("not audio")
    forecast = os.path.join(ROOT, "models", "forecast_a.tflite.zlib")
    cases = [(str(listening_model), str(tmp_path / "notes.wav")),
             (str(listening_model), str(tmp_path / "missing.wav")),
             (forecast, str(tmp_path / "notes.wav")),
             (str(tmp_path / "notes.wav"), "-")]
    for model, audio_path in cases:
        result = detect_cli(model, audio_path, stdin=b"")
        err = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2, (model, audio_path, err)
        assert len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize("case", ["empty", "not_wav", "keyword_only_version"])
def test_negatives_option_errors_before_training(case, tmp_path, speech_dir, capsys):
    import kws_train
    from test_cli import assert_bad_input, run_in_process
    folder = tmp_path / "neg"
    folder.mkdir()
    if case == "not_wav":
        (folder / "a.wav").write_bytes(b"RIFF????WAVEjunk")
    version = "b" if case == "keyword_only_version" else "e"
    out = tmp_path / "out"
    code, _, err = run_in_process(kws_train.main, [
        "--version", version, "--data-dir", str(speech_dir), "--split-dir", str(speech_dir),
        "--out-dir", str(out), "--no-download", "--negatives", str(folder)],
        capsys)
    fragment = {"empty": "holds no WAV files", "not_wav": "not a readable WAV",
                "keyword_only_version": "use e"}[case]
    assert_bad_input(code, err, fragment, out)


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_on_a_live_stream_prints_what_was_detected_and_exits_130(
        listening_model, tmp_path, as_json):
    import signal
    import time
    tone_recording(tmp_path / "rec.wav")
    with wave.open(str(tmp_path / "rec.wav"), "rb") as w:
        raw = w.readframes(w.getnframes())
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "kws_detect.py"), str(listening_model), "-",
         "--threshold", "0.6", "--average", "0.3", "--suppression", "1.5"]
        + (["--json"] if as_json else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdin.write(raw)  # the audio so far; the pipe stays open, as a microphone's
    process.stdin.flush()
    if as_json:
        time.sleep(15)  # loading and listening to the 12 s written: well under this
        labels = None
    else:  # each line is printed as the detector fires, before the stream ends
        labels = [process.stdout.readline().decode().split()[1] for _ in range(3)]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    if as_json:
        labels = [d["label"] for d in json.loads(out)]
    assert labels == ["go", "stop", "yes"]
    assert b"Traceback" not in err
    processed = float(err.decode().split("processed ")[1].split(" s of audio")[0])
    assert processed == (12.0 if as_json else pytest.approx(10.0, abs=1.0))


def test_user_negatives_are_capped_at_the_made_negatives_share():
    clips = corpus_of(speech.SPLITS)
    config = audio.FeatureConfig()
    data = speech.featurize(clips, config, speech.Augmentation(), 0)
    neg = negatives.Negatives(unknown_kinds=("partial",))
    user = (np.full((100, 16000), 0.2, np.float32), np.zeros(100, bool))
    result = speech.add_negatives(data, clips, config, speech.Augmentation(), neg, 0, user)
    made = len(data.train[1]) + 1 + 2  # keywords, background, unknown
    cap = negatives.user_cap(neg, len(data.train[1]))
    assert cap == 2 and len(result.train[1]) == made + cap
    assert (result.train[1][made:] == 3).all()  # unknown speech


def test_smoothing_a_recording_shorter_than_the_span():
    probs = np.array([[0.2, 0.8], [0.4, 0.6]], np.float32)
    assert stream.smooth(probs, 5)[:, 0] == pytest.approx([0.2, 0.3])


def test_speech_recordings_hold_other_speech_and_music_never_a_synthesized_keyword():
    """The keyword-free speech (and the mining stream made the same way from the
    training voices, which include synthesized keywords) never plays a keyword."""
    rng = np.random.default_rng(3)
    clips = np.zeros((4, 16000), np.float32)
    clips[:, 4000:10000] = 0.3 * rng.standard_normal((4, 6000))
    speech_ = made_speech(count=6)
    keyword = made_speech(count=6, seed=2, kind="keyword")
    from common.kws import synth
    both = synth.Speech(np.concatenate([speech_.audio, keyword.audio]),
                        np.concatenate([speech_.starts, keyword.starts + len(speech_.audio)]),
                        np.concatenate([speech_.lengths, keyword.lengths]),
                        speech_.utterances + keyword.utterances, {})
    rec = stream.make_recording("s", clips, np.arange(4), 16000, 120.0, rng,
                                keywords=False, speech=both)
    kinds = {kind.rsplit(":", 1)[0] for *_, kind in rec.events}
    assert "speech:word" in kinds and kinds <= {"speech:word", "speech:phrase", "music"}
    assert {kind.split(":")[-1] for *_, kind in rec.events if kind != "music"} <= {
        u.text for u in speech_.utterances}
    spoken = sum(end - start for start, end, kind in rec.events if kind != "music")
    assert spoken > 60  # most of the two minutes is speech
    with_words = stream.make_recording("w", clips, np.arange(4), 16000, None, rng,
                                       speech=both)
    for start, end, kind in with_words.events:  # speech after a word's hit window
        for w_start, w_end, _ in with_words.words:
            assert kind == "music" or end <= w_start or start >= w_end + \
                stream.HIT_WINDOW_S - 1e-6


def test_listening_minutes_beyond_what_memory_holds_is_an_error():
    import argparse
    from common.kws import reports
    args = argparse.Namespace(listening_minutes=1e9)
    with pytest.raises(UserError, match="--listening-minutes"):
        reports.listening_minutes(args, None)
    args.listening_minutes = reports.MAX_LISTENING_MINUTES
    assert reports.listening_minutes(args, None) == reports.MAX_LISTENING_MINUTES


def test_false_alarms_name_the_sound_that_filled_their_window():
    events = [(0.0, 2.0, "speech:word:yet"), (2.5, 3.0, "music"),
              (5.0, 9.0, "speech:phrase:cup of tea")]
    detections = [(1.5, 7, 0.99), (1.9, 7, 0.99), (3.2, 6, 0.95), (8.0, 6, 0.97),
                  (12.0, 6, 0.9)]
    labels = ["down", "go", "left", "no", "right", "stop", "up", "yes"]
    assert stream.fired_on(detections, events, labels) == {
        "up": [("cup of tea", 1), ("music", 1), ("noise", 1)], "yes": [("yet", 2)]}
