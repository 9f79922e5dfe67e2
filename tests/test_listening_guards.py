"""Guards for what issue 28's mutation test of the listening code found unguarded:
each test states a behaviour a user of kws_detect.py, of e's training or of its
reports would notice, and was seen failing with its bug planted (the mutants, the
tables and the command that replants them: docs/mutation_testing.md and
docs/mutation_run.py). Tiny made data; the shipped models/kws_e.tflite.zlib where a
real model is needed; nothing is trained."""
import json
import os
import signal
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

import kws_detect
from conftest import LABELS, ROOT, write_wav
from common.kws import audio, negatives, reports, robustness, stream

SHIPPED_E = os.path.join(ROOT, "models", "kws_e.tflite.zlib")


# --- the operating point is chosen on validation audio, by the documented rule -------

def test_the_detector_settings_are_chosen_on_the_validation_split_and_voices(
        monkeypatch):
    """Choosing them on the test audio would leak: the report's figures would be
    measured on what picked the threshold."""
    from common.tflite import runtime
    seen = {}

    def spy(runner, config, labels, split, minutes, speech):
        seen.update(split=split, speech=speech)
        return stream.DetectorSettings(), {}, True
    monkeypatch.setattr(stream, "validation_settings", spy)
    monkeypatch.setattr(runtime, "Runner", lambda tflite: None)
    splits = {name: (np.full((2, 16000), k, np.float32), np.arange(2))
              for k, name in enumerate(("train", "val", "test"))}
    data = SimpleNamespace(load=lambda rate: SimpleNamespace(splits=splits),
                           labels=LABELS, synthesized=lambda split, plan: f"{split} voices")
    reports.choose_detector(b"", data, SimpleNamespace(features=audio.FeatureConfig()), 1.0)
    assert seen["split"] is splits["val"] and seen["speech"] == "val voices"


HOP = 10.0  # a hop of 10 s: an hour is 360 rows, and every span averages one hop


def recording(name, seconds, words=()):
    """A made recording at 1 Hz: its seconds are its samples (no audio needed)."""
    return stream.Recording(name, np.zeros(int(seconds), np.int8), 1, tuple(words), ())


def scores_at(rows, peaks, base=(0.0, 0.0, 1.0)):
    """``[rows, 3]`` probabilities (keyword a, keyword b, unknown): unknown speech
    everywhere but ``peaks`` ``{row: keyword a's probability}``."""
    probs = np.tile(np.array(base, np.float32), (rows, 1))
    for row, p in peaks.items():
        probs[row] = (p, 0.0, 1.0 - p)
    return probs


MASK = stream.keyword_mask(["a", "b", negatives.UNKNOWN])
WORD_AT = list(range(2, 360, 3))  # a word every 30 s of an hour: the hops they end


def stream_recording(peak):
    """An hour of words, each 0.5 s long, 1 s before the hop that scores it ``peak``."""
    words = [(HOP * (k + 1) - 1, HOP * (k + 1) - 0.5, 0) for k in WORD_AT]
    return recording("stream", 3600, words), scores_at(360, {k: peak for k in WORD_AT})


def test_ties_in_hits_are_broken_by_the_fewest_false_alarms():
    """Every threshold hits every word; five keyword-free windows score 0.5, within
    the cap (0.5 an hour over 10 hours): the chosen settings do not fire on them."""
    rec, probs = stream_recording(1.0)
    speech = recording("speech_only", 9 * 3600)
    probs_of = {"stream": probs,
                "speech_only": scores_at(9 * 360, {k: 0.5 for k in range(50, 550, 100)})}
    settings, point, held = stream.choose_settings(probs_of, [rec, speech], MASK, HOP)
    assert held and point["stream"]["hit_rate"] == 1.0
    assert point["speech_only"]["false_alarms"] == 0
    # still tied (every word, no false alarm) from 0.51 up: the highest threshold
    assert settings.threshold == max(stream.THRESHOLDS)


def test_the_false_alarm_cap_counts_the_keyword_free_speech():
    """Words score 0.6, fifty keyword-free windows 0.8 (5 an hour over 10 hours): no
    threshold that hits a word keeps the cap, so the choice fires on none of them."""
    rec, probs = stream_recording(0.6)
    speech = recording("speech_only", 9 * 3600)
    probs_of = {"stream": probs,
                "speech_only": scores_at(9 * 360, {k: 0.8 for k in range(30, 3030, 60)})}
    settings, point, held = stream.choose_settings(probs_of, [rec, speech], MASK, HOP)
    assert held and settings.threshold > 0.8
    assert point["speech_only"]["false_alarms"] == 0


def test_exactly_the_cap_is_within_it():
    """Ten keyword-free windows in ten hours is 1 false alarm an hour: the cap, kept."""
    rec, probs = stream_recording(0.6)
    speech = recording("speech_only", 9 * 3600)
    probs_of = {"stream": probs,
                "speech_only": scores_at(9 * 360, {k: 0.8 for k in range(100, 3100, 300)})}
    settings, point, held = stream.choose_settings(probs_of, [rec, speech], MASK, HOP)
    assert held and point["stream"]["hit_rate"] == 1.0 and settings.threshold <= 0.6
    assert point["speech_only"]["false_alarms"] == 10


def test_each_point_of_the_det_curve_is_scored_at_its_own_threshold():
    peaks = [0.355 + 0.06 * i for i in range(10)]  # word i scores peaks[i]
    words = [(100 * i + 50, 100 * i + 50.5, 0) for i in range(10)]
    probs_of = {"stream": scores_at(1000, {100 * i + 50: p for i, p in enumerate(peaks)}),
                "speech_only": scores_at(1000, {500: 0.65})}
    recs = [recording("stream", 1000, words), recording("speech_only", 1000)]
    curve = stream.det_curve(probs_of, recs, stream.DetectorSettings(
        hop_s=1.0, average_s=1.0, threshold=0.9, suppression_s=1.0), MASK)
    assert len(curve) == len(stream.THRESHOLDS)
    for point in curve:
        assert point["hit_rate"] == sum(p >= point["threshold"] for p in peaks) / 10
        assert point["fa_per_hour_speech_only"] == (3.6 if point["threshold"] <= 0.65
                                                    else 0.0)


def test_each_keyword_has_its_own_det_curve():
    """Keyword a's words peak at 0.95 and its false alarm at 0.7; b's words at 0.5 and
    its false alarm at 0.8: each curve counts only its own keyword."""
    probs = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (1000, 1))
    words = []
    for i, (label, p) in enumerate([(0, 0.95), (1, 0.5)] * 5):
        probs[100 * i + 50, label], probs[100 * i + 50, 2] = p, 1.0 - p
        words.append((100 * i + 50, 100 * i + 50.5, label))
    speech = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (1000, 1))
    speech[300], speech[700] = (0.7, 0.0, 0.3), (0.0, 0.8, 0.2)
    recs = [recording("stream", 1000, words), recording("speech_only", 1000)]
    curve = stream.det_curve({"stream": probs, "speech_only": speech}, recs,
                             stream.DetectorSettings(hop_s=1.0, average_s=1.0,
                                                     threshold=0.9, suppression_s=1.0),
                             MASK, ["a", "b", negatives.UNKNOWN])
    for point in curve:
        t = point["threshold"]
        assert point["per_keyword"] == {"a": [float(t <= 0.95), 3.6 * (t <= 0.7)],
                                        "b": [float(t <= 0.5), 3.6 * (t <= 0.8)]}


# --- the detector: what may fire, how long it averages, how long it waits -------------

class Favours:
    """A runner whose logits favour one output, whatever it hears."""

    def __init__(self, index, outputs=4):
        self.logits = np.zeros(outputs, np.float32)
        self.logits[index] = 12.0

    def __call__(self, features):
        return self.logits


@pytest.mark.parametrize("name", negatives.NON_KEYWORDS)
def test_background_and_unknown_speech_never_fire(name):
    labels = ["a", "b", negatives.BACKGROUND, negatives.UNKNOWN]
    settings = stream.DetectorSettings(hop_s=0.2, threshold=0.5, average_s=0.2)
    config = audio.FeatureConfig()
    heard = np.zeros(16000, np.float32)
    assert stream.Listener(Favours(labels.index(name)), config, labels,
                           settings).feed(heard) == []
    assert stream.Listener(Favours(0), config, labels, settings).feed(heard)


def test_an_averaging_span_of_three_hops_averages_three():
    """0.3 s at a 0.1 s hop is 3 hops (0.3 / 0.1 is 2.999... in floating point): a
    keyword heard in two hops of three scores 2/3."""
    probs = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    settings = stream.DetectorSettings(hop_s=0.1, average_s=0.3, threshold=0.6,
                                       suppression_s=1.0)
    found = stream.detect(probs, settings, np.array([True, False]))
    assert [(t, label) for t, label, _ in found] == [(0.5, 0)]
    assert found[0][2] == pytest.approx(2 / 3)


def test_suppression_is_measured_in_seconds_at_any_hop():
    probs = np.tile(np.array([[1.0, 0.0]], np.float32), (30, 1))
    settings = stream.DetectorSettings(hop_s=0.2, average_s=0.2, threshold=0.5,
                                       suppression_s=1.0)
    times = [t for t, _, _ in stream.detect(probs, settings, np.array([True, True]))]
    assert times == pytest.approx([0.2, 1.2, 2.2, 3.2, 4.2, 5.2])


def test_a_detection_exactly_at_the_hit_windows_end_is_a_hit():
    """The window is from the word's start to 0.75 s after its end, both included: on
    the 0.1 s hop grid a detection lands exactly there often."""
    end = 1.45
    fired = round(22 * 0.1, 6)  # how detect reports the hop ending at 2.2 s
    assert fired == pytest.approx(end + stream.HIT_WINDOW_S)
    result = stream.score([(fired, 0, 1.0)], [(1.0, end, 0)], 60)
    assert (result["hits"], result["false_alarms"]) == (1, 0)
    start = stream.score([(1.0, 0, 1.0)], [(1.0, end, 0)], 60)
    assert start["hits"] == 1


def test_a_score_exactly_at_the_threshold_fires():
    """The detector fires when the score *reaches* the threshold."""
    probs = np.array([[0.5, 0.5]] * 3, np.float32)
    settings = stream.DetectorSettings(average_s=0.1, threshold=0.5)
    assert [t for t, _, _ in stream.detect(probs, settings, np.array([True, False]))] == [
        0.1]


# --- the report's recordings and figures ---------------------------------------------

class Loudness:
    """Logits from the features: keyword a when loud, b when quiet, background."""

    def __call__(self, features):
        level = float(np.mean(features))
        return np.array([level, -level, 0.5 * level], np.float32)


def labelled_clips(labels, rate=16000):
    """Clip i says label ``labels[i]`` as a word 0.1 x (label + 1) s long (on the
    10-ms frame grid), so a word's span tells which label's clip it is."""
    rng = np.random.default_rng(5)
    clips = np.zeros((len(labels), rate), np.float32)
    for i, label in enumerate(labels):
        n = int(0.1 * (label + 1) * rate)
        clips[i, 3200:3200 + n] = np.clip(0.3 * rng.standard_normal(n), -1, 1)
    return clips


def test_each_word_of_a_made_stream_is_scored_as_its_own_clips_label():
    y = np.array([0, 1, 2, 3, 4, 5])
    rec = stream.make_recording("s", labelled_clips(y), y, 16000, None,
                                np.random.default_rng(6), events=False)
    assert len(rec.words) == 6
    for start, end, label in rec.words:
        assert round((end - start) / 0.1) == label + 1


def test_the_report_listens_at_its_settings_hop():
    """A model whose settings hop 0.5 s is scored on windows 0.5 s apart (its times
    and its suppression are counted in them)."""
    clips = labelled_clips([0, 1])
    plan = (("noise_only", False, None, 1.0),)
    recs, probs = stream.listen_to(Loudness(), audio.FeatureConfig(), (clips, [0, 1]),
                                   plan, 0.1, 1, "test", hop_s=0.5)
    assert recs[0].seconds == 6.0 and len(probs["noise_only"]) == 12


def test_the_reports_false_alarm_figures_are_each_recordings_own():
    """A detector that fires every second: the report's keyword-free speech figure is
    the speech recording's, and each keyword's share of it adds up to it."""
    from conftest import made_speech
    labels = ["a", "b", negatives.BACKGROUND]
    y = np.array([0, 1, 0, 1])
    settings = stream.DetectorSettings(average_s=0.1, threshold=0.0, suppression_s=1.0)
    metrics, details = stream.listening_report(
        Loudness(), audio.FeatureConfig(), labels, (labelled_clips(y), y), settings,
        minutes=0.1, speech=made_speech())
    recordings = details["recordings"]
    assert metrics["speech_fa_per_hour"] == recordings["speech_only"][
        "false_alarms_per_hour"] > 0
    assert metrics["stream_fa_per_hour"] == recordings["stream"]["false_alarms_per_hour"]
    assert metrics["speech_fa_per_hour"] != metrics["stream_fa_per_hour"]
    assert sum(k["speech_fa_per_hour"] for k in details["per_keyword"].values()) == \
        pytest.approx(metrics["speech_fa_per_hour"], rel=1e-3)
    assert sum(k["stream_fa_per_hour"] for k in details["per_keyword"].values()) == \
        pytest.approx(metrics["stream_fa_per_hour"], rel=1e-3)  # seconds: 0.1 s
    assert all(set(point["per_keyword"]) == {"a", "b"} for point in details["det"])


# --- windows cut from made streams, labelled by coverage ------------------------------

def test_a_window_holding_40_percent_of_a_keyword_carries_no_label():
    """Neither the keyword (most of it is missing) nor unknown speech (it may be
    the word heard early): left out of the loss. 30 % is a sliver: unknown."""
    words = [(2.0, 3.0, 5)]
    assert negatives.coverage_label(2.6, 3.6, words, [], 8, 9) is None
    assert negatives.coverage_label(2.7, 3.7, words, [], 8, 9) == 9


def test_windows_cut_just_after_each_keyword_hold_it_whole():
    """``near_end`` windows end 0-300 ms after a word: each holds the whole word
    (words of 0.1-0.4 s, 2-5 s apart), every label the first included."""
    y = np.array([0, 1, 2, 3] * 3)
    rec = stream.make_recording("s", labelled_clips(y), y, 16000, None,
                                np.random.default_rng(7), events=False)
    waves, labels = negatives.cut_windows(rec, 60, np.random.default_rng(8), 8, 9,
                                          near_end=1.0)
    assert len(waves) == 60 and set(labels) == {0, 1, 2, 3}


def test_stream_windows_of_synthesized_speech_carry_their_coverage_label(monkeypatch):
    """The windows from_speech cuts from its training stream: background where nothing
    is said, unknown where other speech is, as ``coverage_label`` says."""
    from conftest import made_speech
    from common.kws import synth
    made = []
    real = stream.make_recording

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(stream, "make_recording", spy)
    labels = ["a", "b", negatives.BACKGROUND, negatives.UNKNOWN]
    y = np.array([0, 1, 0, 1])
    negs = negatives.Negatives(stream_fraction=10.0, synth_plan=synth.Plan())
    waves, out = negatives.from_speech(made_speech(count=6), labelled_clips(y), y, 4, negs,
                                       16000, np.random.default_rng(9), labels, 3)
    rec = made[0]
    spans = [(s, e) for s, e, kind in rec.events if kind.startswith("speech")]
    assert {2, 3} <= set(out)
    for wave, label in zip(waves, out):
        at = [i for i in np.flatnonzero(rec.signal == wave[0])
              if np.array_equal(rec.signal[i:i + 16000], wave)][0] / 16000
        assert negatives.coverage_label(at, at + 1, rec.words, spans, 2, 3) == label


def test_a_keyword_with_speech_beside_it_keeps_its_own_label():
    from conftest import made_speech
    from common.kws import synth
    labels = ["a", "b", "c", negatives.BACKGROUND, negatives.UNKNOWN]
    y = np.array([0, 1, 2])
    clips = labelled_clips(y)
    negs = negatives.Negatives(context_fraction=5.0, synth_plan=synth.Plan())
    waves, out = negatives.from_speech(made_speech(count=6), clips, y, 6, negs, 16000,
                                       np.random.default_rng(10), labels, 4)
    assert len(out) == 30 and set(out) == {0, 1, 2}
    for wave, label in zip(waves, out):
        word = slice(3200, 3200 + int(0.1 * (label + 1) * 16000))
        assert np.allclose(wave[word], clips[label, word], atol=1e-6)


# --- the made negatives ----------------------------------------------------------------

def word_clip(values, at=3200, length=16000):  # at: on the 10-ms frame grid
    clip = np.zeros(length, np.float32)
    clip[at:at + len(values)] = values
    return clip


def placed(out):
    """The non-zero stretch of a made clip (the word as it was placed)."""
    nonzero = np.flatnonzero(out)
    return out[nonzero[0]:nonzero[-1] + 1]


RAMP = np.linspace(0.1, 0.9, 4000, dtype=np.float32)  # every sample loud, none equal


def test_a_reversed_negative_plays_the_word_backwards():
    out = negatives.reverse(word_clip(RAMP), None, 16000, negatives.Negatives(),
                            np.random.default_rng(0))
    assert np.array_equal(placed(out), RAMP[::-1])


def test_a_splice_is_the_start_of_one_word_then_the_end_of_another():
    rng = np.random.default_rng(1)
    other = -RAMP[::-1]  # negative values: the second word
    for _ in range(10):
        out = placed(negatives.splice(word_clip(RAMP), word_clip(other), 16000,
                                      negatives.Negatives(), rng))
        first, second = out[out > 0], out[out < 0]
        assert len(out) == len(first) + len(second)
        assert np.array_equal(first, RAMP[:len(first)])       # the first word's start
        assert np.array_equal(second, other[-len(second):])   # the other word's end
        assert 0.25 * len(RAMP) < len(first) < 0.75 * len(RAMP)


def test_a_splice_joins_words_of_two_labels():
    """Two words of one label spliced could say that keyword: labelled unknown, it
    would teach the model to reject it."""
    y = np.array([0, 0, 1, 1, 2, 2])
    clips = np.stack([word_clip(np.full(4000, 0.1 * (i + 1), np.float32)) for i in range(6)])
    waves, _ = negatives.unknown(clips, y, 40, 16000, negatives.Negatives(),
                                 np.random.default_rng(2), kinds=("splice",))
    for wave in waves:
        sources = {int(round(v * 10)) - 1 for v in wave[wave != 0]}
        assert len({int(y[i]) for i in sources}) == 2, sources


def test_a_partial_word_is_its_first_or_last_quarter_to_half():
    rng = np.random.default_rng(3)
    starts = ends = 0
    for _ in range(60):
        piece = placed(negatives.partial(word_clip(RAMP), None, 16000,
                                         negatives.Negatives(), rng))
        assert 0.25 * len(RAMP) - 1 <= len(piece) <= 0.55 * len(RAMP) + 1
        if np.array_equal(piece, RAMP[:len(piece)]):
            starts += 1
        else:
            assert np.array_equal(piece, RAMP[-len(piece):])
            ends += 1
    assert starts and ends


def test_every_kind_of_unknown_speech_is_made():
    clips = np.stack([word_clip(RAMP * (1 if i % 2 else -1)) for i in range(4)])
    _, kinds = negatives.unknown(clips, np.arange(4) % 2, 40, 16000, negatives.Negatives(),
                                 np.random.default_rng(11))
    assert set(kinds) == set(negatives.UNKNOWN_KINDS)


def test_made_silence_lies_within_its_level_range():
    """Background examples are room noise from -80 to -20 dBFS (each half of a clip
    its own level), not louder."""
    aug = negatives.Negatives()
    clips = negatives.silence(40, 16000, aug, np.random.default_rng(12))
    halves = np.concatenate([clips[:, :4000], clips[:, -4000:]])  # always one segment
    level_db = 20 * np.log10(np.sqrt(np.mean(np.square(halves, dtype=np.float64), axis=1)))
    assert level_db.min() > aug.silence_dbfs[0] - 1 and level_db.max() < aug.silence_dbfs[1] + 1
    assert level_db.max() - level_db.min() > 30  # the range is used


def test_other_speech_is_brought_to_the_keywords_level():
    rng = np.random.default_rng(13)
    piece = (0.01 * rng.standard_normal(8000)).astype(np.float32)
    for level in (0.02, 0.2):
        scaled = negatives.at_level(piece, level, (0.0, 0.0), rng)
        assert np.sqrt(np.mean(np.square(scaled, dtype=np.float64))) == pytest.approx(
            level, rel=1e-4)


def test_the_synthesis_cache_is_rebuilt_when_a_splits_voices_change(tmp_path, monkeypatch):
    """A split moved to other voices must not be served the old voices' audio."""
    from common.kws import synth
    from test_synth import Engine, synthesize
    engine = Engine(monkeypatch)
    synthesize(tmp_path)
    said = engine.said
    monkeypatch.setitem(synth.VOICES, "train", (synth.ESPEAK, ("en",)))
    synthesize(tmp_path)
    assert engine.said > said


def test_other_speech_is_words_and_phrases_never_keywords():
    from conftest import made_speech
    from common.kws import synth
    parts = [made_speech(count=2, kind=kind, seed=k)
             for k, kind in enumerate(("word", "phrase", "keyword"))]
    lengths = np.concatenate([p.lengths for p in parts])
    both = synth.Speech(np.concatenate([p.audio for p in parts]),
                        np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths,
                        [u for p in parts for u in p.utterances], {})
    assert both.others() == [0, 1, 2, 3]


def test_mined_windows_are_trained_on_as_unknown_speech(monkeypatch):
    """What the model fired on in keyword-free speech is added as unknown speech (as
    background it would teach that speech is silence), after the training examples."""
    import dataclasses
    import kws_train
    from common.kws import speech, train
    labels = ["go", "no", negatives.BACKGROUND, negatives.UNKNOWN]
    x, y = np.zeros((4, 49, 10, 1), np.float32), np.array([0, 1, 2, 3])
    mined = np.ones((3, 49, 10, 1), np.float32)
    monkeypatch.setattr(train, "mine_hard_negatives", lambda *a: (mined, 50))
    fitted = []

    def fit(recipe, features, targets, seed, verbose, model=None):
        fitted.append((features.train, targets))
        return model, {"best_val_loss": 0.0}
    monkeypatch.setattr(train, "fit_ds_cnn", fit)
    recipe = dataclasses.replace(kws_train.RECIPES["e"], negatives=dataclasses.replace(
        kws_train.RECIPES["e"].negatives, mining_rounds=1))
    features = speech.SpeechData(labels, (x, y), (x, y), (x, y))
    data = SimpleNamespace(labels=labels)
    _, info = train.tune_on_mined("model", recipe, data, features, 0, False)
    (train_x, train_y), targets = fitted[0]
    assert list(train_y) == [0, 1, 2, 3, 3, 3, 3] and list(targets) == list(train_y)
    assert np.array_equal(train_x[4:], mined) and info[0]["fired"] == 3


def test_each_mining_round_listens_to_new_keyword_free_speech_in_training_voices(
        monkeypatch):
    """Mining a stream with keywords would label real keywords unknown; mining the
    validation voices would leak them into training; every round hears new audio."""
    from common.kws import speech, synth, train
    heard = []

    def spy(name, clips, y, rate, seconds, rng, keywords=True, events=True, speech=None):
        heard.append((keywords, speech, int(rng.integers(1 << 30))))
        return stream.Recording(name, np.zeros(32000, np.float32), rate, (), ())
    monkeypatch.setattr(stream, "make_recording", spy)
    labels = ["go", "no", negatives.BACKGROUND, negatives.UNKNOWN]
    data = SimpleNamespace(
        labels=labels, synthesized=lambda split, plan: f"{split} voices",
        load=lambda rate: speech.Clips(labels, {"train": (np.zeros((2, 16000)), [0, 1])},
                                       {}))
    model = SimpleNamespace(predict=lambda x, batch_size=None, verbose=0: np.zeros(
        (len(x), 4), np.float32))
    negs = negatives.Negatives(synth_unknown_fraction=0.1, synth_plan=synth.Plan(),
                               mining_minutes=0.1)
    recipe = SimpleNamespace(negatives=negs, features=audio.FeatureConfig())
    for round_index in (0, 1):
        train.mine_hard_negatives(model, recipe, data, None, 0, round_index)
    assert [(keywords, voices) for keywords, voices, _ in heard] == [
        (False, "train voices")] * 2
    assert heard[0][2] != heard[1][2]


def test_a_words_span_is_its_part_within_30_db_of_the_loudest():
    """The span a word is scored in (and cut by the made negatives) holds what is up
    to 30 dB under its peak, not what is 35 dB under it."""
    loud = 0.5
    clip = np.zeros(16000, np.float32)
    clip[1920:3840] = loud * 10 ** (-35 / 20)   # 35 dB down: outside
    clip[3840:5760] = loud * 10 ** (-25 / 20)   # 25 dB down: inside
    clip[5760:8960] = loud                      # (10-ms frames of 160 samples)
    assert negatives.active_region(clip, 16000) == (3840, 8960)


# --- audio in: rates, channels, reads of any size -------------------------------------

def dominant_hz(signal, rate):
    spectrum = np.abs(np.fft.rfft(signal))
    return np.argmax(spectrum) * rate / len(signal)


def test_a_wav_at_another_rate_is_heard_at_the_models_rate(tmp_path):
    path = str(tmp_path / "tone8k.wav")
    write_wav(path, list(0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 8000)),
              rate=8000)
    heard = np.concatenate(list(audio.wav_pieces(path, 16000)))
    assert len(heard) == 32000  # 2 s
    assert dominant_hz(heard, 16000) == pytest.approx(1000, abs=2)


class Trickle:
    """A pipe giving its bytes in reads of 1 to 7 bytes: frames split across reads."""

    def __init__(self, content):
        self.content, self.at, self.rng = content, 0, np.random.default_rng(4)

    def read1(self, size):
        n = min(size, int(self.rng.integers(1, 8)))
        self.at += n
        return self.content[self.at - n:self.at]


@pytest.mark.parametrize("channels", [1, 2])
def test_standard_input_read_in_odd_pieces_is_heard_whole(channels):
    samples = (np.arange(-3000, 3000) * 5).astype("<i2")
    pcm = audio.PcmStream("standard input", Trickle(samples.tobytes()), channels, 16000)
    heard = np.concatenate(list(pcm.pieces(16000)))
    expected = samples.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768
    assert np.array_equal(heard, expected)


def test_a_stereo_wav_is_heard_as_the_mean_of_its_channels(tmp_path):
    path = str(tmp_path / "stereo.wav")
    write_wav(path, [0.6, -0.2] * 8000, channels=2)
    heard = np.concatenate(list(audio.wav_pieces(path, 16000)))
    assert heard == pytest.approx(np.full(8000, 0.2), abs=1e-3)
    with open(path, "rb") as f:
        piped = np.concatenate(list(audio.PcmStream.wav("x", f).pieces(16000)))
    assert np.array_equal(piped, heard)


# --- the robustness report's conditions are what its names say -------------------------

def test_the_telephone_condition_passes_300_to_3400_hz():
    t = np.arange(16000) / 16000
    tones = {hz: np.sin(2 * np.pi * hz * t).astype(np.float32)[None]
             for hz in (250, 320, 3350, 3500)}
    kept = {hz: float(np.sqrt(np.mean(robustness.perturb_split(x, 16000, "telephone")
                                      ** 2)) / np.sqrt(0.5)) for hz, x in tones.items()}
    assert kept[320] == pytest.approx(1, abs=0.01)
    assert kept[3350] == pytest.approx(1, abs=0.01)
    assert kept[250] < 0.01 and kept[3500] < 0.01


def test_the_700_ms_reverb_condition_decays_60_db_in_700_ms():
    """An impulse through the condition: its tail falls 60 dB per 0.7 s (25.7 dB
    from 0.1 s to 0.4 s), measured over 16 clips' 50-ms windows."""
    clips = np.zeros((16, 16000), np.float32)
    clips[:, 0] = 1.0
    out = robustness.perturb_split(clips, 16000, "reverb_700ms").astype(np.float64)

    def level_db(at_s):
        window = out[:, int(at_s * 16000):int((at_s + 0.05) * 16000)]
        return 10 * np.log10(np.mean(window ** 2))
    assert level_db(0.1) - level_db(0.4) == pytest.approx(60 * 0.3 / 0.7, abs=2.0)


# --- kws_detect.py: the model's own settings, its output and its stops (last: these
#     load TensorFlow) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def eager_model(tmp_path_factory):
    """The shipped e recording settings no default has: it fires at once on anything
    (threshold 0), averages one hop and keeps detections 2 s apart (no JSON beside
    it: nothing to check the bytes against)."""
    from common.tflite import tflite_file
    tflite = zlib.decompress(open(SHIPPED_E, "rb").read())
    settings = stream.DetectorSettings(hop_s=0.1, average_s=0.1, threshold=0.0,
                                       suppression_s=2.0)
    path = tmp_path_factory.mktemp("eager") / "eager.tflite.zlib"
    path.write_bytes(zlib.compress(tflite_file.with_metadata(
        tflite, stream.DETECTOR_METADATA, settings.to_text())))
    return str(path)


def quiet_wav(path, seconds=5.0, rate=16000):
    rng = np.random.default_rng(1)
    write_wav(str(path), list(0.01 * rng.standard_normal(int(seconds * rate))), rate=rate)
    return str(path)


def test_kws_detect_listens_at_the_settings_the_model_records(eager_model, tmp_path,
                                                              capsys):
    """The README's command runs the shipped e at its recorded 0.995 / 0.8 s, not at
    the detector's defaults (0.9 / 0.5 s / 1 s)."""
    code = kws_detect.main([eager_model, quiet_wav(tmp_path / "q.wav"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [d["time_s"] for d in json.loads(out)] == [0.1, 2.1, 4.1]
    assert "(threshold 0, averaged over 0.1 s)" in err and "note:" not in err
    # a setting given on the command line still wins over the recorded one
    assert kws_detect.main([eager_model, str(tmp_path / "q.wav"), "--json",
                            "--suppression", "1"]) == 0
    assert [d["time_s"] for d in json.loads(capsys.readouterr().out)] == [
        0.1, 1.1, 2.1, 3.1, 4.1]
    # ... a zero too: no suppression fires every hop
    assert kws_detect.main([eager_model, str(tmp_path / "q.wav"), "--json",
                            "--suppression", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 50


def test_only_a_model_without_background_or_unknown_output_gets_the_note(
        eager_model, tmp_path, capsys):
    wav = quiet_wav(tmp_path / "q.wav", seconds=1.0)
    note = "note: this model has no background or unknown output"
    assert kws_detect.main([eager_model, wav, "--json"]) == 0
    assert note not in capsys.readouterr().err
    assert kws_detect.main([os.path.join(ROOT, "models", "kws_b.tflite.zlib"), wav,
                            "--json"]) == 0
    assert note in capsys.readouterr().err


class ClosedPipe:
    """stdout whose reader has gone (``kws_detect.py ... | head -0``)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_output_pipe_is_one_error_line_and_exit_2(eager_model, tmp_path, capsys,
                                                           monkeypatch):
    wav = quiet_wav(tmp_path / "q.wav", seconds=1.0)
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = kws_detect._run([eager_model, wav])
    err = capsys.readouterr().err
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: the output pipe was closed"]


def test_an_interrupt_while_listening_prints_the_summary_and_no_error_line(
        eager_model, tmp_path, capsys, monkeypatch):
    """Ctrl-C on a live stream is how a user stops it: the detections and the summary,
    exit 130, and no ``error: interrupted`` after them."""
    def pieces(path, rate, recording=None):
        yield np.zeros(rate, np.float32)  # a second heard, then Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler interrupts the sleep
        yield np.zeros(rate, np.float32)
    monkeypatch.setattr(kws_detect, "audio_pieces", pieces)
    with pytest.raises(SystemExit) as stop:
        kws_detect.run([eager_model, "-", "--json"])
    out, err = capsys.readouterr()
    assert stop.value.code == 130
    assert [d["time_s"] for d in json.loads(out)] == [0.1]
    assert err.strip().splitlines()[-1].startswith("processed 1.0 s of audio"), err
    assert not [line for line in err.splitlines() if line.startswith("error")], err
