"""Synthesized speech (common/kws/synth.py) and the negatives made with it."""
import os

import numpy as np
import pytest

from conftest import TEST_WORDS, made_speech, needs_engines
from common.errors import UserError
from common.kws import negatives, synth

KEYWORDS = ["down", "go", "left", "no", "right", "stop", "up", "yes"]
KEYWORD_SOUNDS = {"no": "noU", "go": "goU", "up": "Vp", "yes": "jEs", "stop": "stQp",
                  "right": "raIt"}


@pytest.mark.parametrize("word, phonemes, expected", [
    ("know", "n'oU", "excluded"),          # a homophone
    ("write", "r'aIt", "excluded"),
    ("going", "g'oUIN", "excluded"),       # begins with a keyword, in sound
    ("upper", "'Vp3", "excluded"),
    ("stopped", "st'Qpt", "excluded"),
    ("yesterday", "j'Est3deI", "excluded"),
    ("no", "n'oU", "excluded"),            # a keyword itself
    ("yet", "j'Et", "soundalike"),         # one phoneme symbol away
    ("cup", "k'Vp", "soundalike"),
    ("snow", "sn'oU", "soundalike"),
    ("table", "t'eIb@L", "other"),
])
def test_words_that_sound_like_or_begin_with_a_keyword_are_never_other_speech(
        word, phonemes, expected):
    assert synth.classify(word, phonemes, KEYWORD_SOUNDS) == expected


@needs_engines
def test_the_lexicon_leaves_out_homophones_and_keyword_words(tmp_path):
    words = tmp_path / "words"
    words.write_text("\n".join(TEST_WORDS) + "\n")
    groups = synth.lexicon(KEYWORDS, str(words))
    for word in ("know", "write", "going", "upper", "stopped") + tuple(KEYWORDS):
        assert word in groups["excluded"]
    for word in ("yet", "yell", "cup", "town", "lift", "top"):
        assert word in groups["soundalike"]
    assert "garden" in groups["other"]


def plan_of(split, seed=0, words=20, phrases=10, keywords_per_label=2):
    groups = {"soundalike": ["yet", "cup"], "other": ["table", "garden", "river"],
              "excluded": ["know", "going"]}
    return synth.plan_utterances(split, synth.Plan(words, phrases, keywords_per_label),
                                 groups, KEYWORDS, seed)


@needs_engines
def test_training_never_hears_a_validation_or_test_voice():
    voices = {split: {u.voice for u in plan_of(split)} for split in synth.VOICES}
    assert all(v.startswith("espeak-ng:") for v in voices["train"])
    assert all(v.startswith("flite:") for v in voices["val"] | voices["test"])
    assert not voices["val"] & voices["test"]
    names = {split: {v.split(":")[1] for v in vs} for split, vs in voices.items()}
    assert names["val"] <= set(synth.VOICES["val"][1])
    assert names["test"] <= set(synth.VOICES["test"][1])


@needs_engines
def test_only_keyword_utterances_say_a_keyword():
    for u in plan_of("train"):
        spoken = set(u.text.split())
        if u.kind == "keyword":
            assert u.label in KEYWORDS and spoken == {u.label}
        else:
            assert u.label == "" and not spoken & (set(KEYWORDS) | {"know", "going"})


class Engine:
    """Stands in for the engines: counts the utterances it says."""

    def __init__(self, monkeypatch, fail_after=None):
        self.said, self.fail_after = 0, fail_after
        monkeypatch.setattr(synth, "_say", self.say)
        monkeypatch.setattr(synth, "engine_version", lambda name: f"{name} 1.0")
        monkeypatch.setattr(synth, "espeak_voices", lambda: (["en"], ["m1"]))
        monkeypatch.setattr(synth, "lexicon", lambda keywords, path: {
            "soundalike": ["yet"], "other": ["table", "garden"], "excluded": []})

    def say(self, utterance, folder, index):
        if self.fail_after is not None and self.said >= self.fail_after:
            raise KeyboardInterrupt
        self.said += 1
        return np.full(1600 + index, 0.1, np.float32)


def synthesize(tmp_path, seed=0, words=3):
    return synth.synthesize(str(tmp_path), "train", synth.Plan(words, 2, 1), KEYWORDS, seed)


def test_the_synthesis_cache_is_reused_when_its_inputs_match(tmp_path, monkeypatch):
    engine = Engine(monkeypatch)
    first = synthesize(tmp_path)
    assert engine.said == len(first.utterances) == 3 + 2 + 8
    again = synthesize(tmp_path)
    assert engine.said == len(first.utterances)  # nothing said again
    assert np.array_equal(again.audio, first.audio)
    assert [u.text for u in again.utterances] == [u.text for u in first.utterances]
    assert np.array_equal(again.signal(4), first.signal(4))


@pytest.mark.parametrize("change", ["seed", "plan", "engine", "word_list"])
def test_the_synthesis_cache_is_rebuilt_when_an_input_changes(tmp_path, monkeypatch,
                                                               change, small_word_list):
    engine = Engine(monkeypatch)
    synthesize(tmp_path)
    said = engine.said
    if change == "engine":
        monkeypatch.setattr(synth, "engine_version", lambda name: f"{name} 2.0")
    if change == "word_list":
        words = tmp_path / "other_words"
        words.write_text("table\n")
        monkeypatch.setattr(synth, "WORDS_FILE", str(words))
    synthesize(tmp_path, seed=1 if change == "seed" else 0,
               words=4 if change == "plan" else 3)
    assert engine.said > said


def test_an_interrupted_synthesis_leaves_no_cache(tmp_path, monkeypatch):
    Engine(monkeypatch, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path)
    assert os.listdir(tmp_path / "synth") == [
        name for name in os.listdir(tmp_path / "synth") if name.startswith("lexicon-")]
    engine = Engine(monkeypatch)
    synthesize(tmp_path)  # a later run starts afresh and finishes
    assert engine.said == 13


@pytest.mark.parametrize("missing", ["espeak-ng", "flite"])
def test_a_missing_engine_is_one_error_naming_its_package(missing, monkeypatch):
    real = synth.shutil.which
    monkeypatch.setattr(synth.shutil, "which",
                        lambda name: None if name == missing else real(name))
    with pytest.raises(UserError, match=f"apt-get install {missing}"):
        synth.require(missing)


def test_synthesized_windows_are_labelled_and_keep_the_word_whole():
    rng = np.random.default_rng(0)
    speech = made_speech(count=8)
    keyword = made_speech(count=4, seconds=(0.3, 0.6), seed=1, kind="keyword")
    keyword.utterances = [u.__class__(u.text, "keyword", "yes", u.voice, u.options)
                          for u in keyword.utterances]
    both = synth.Speech(np.concatenate([speech.audio, keyword.audio]),
                        np.concatenate([speech.starts, keyword.starts + len(speech.audio)]),
                        np.concatenate([speech.lengths, keyword.lengths]),
                        speech.utterances + keyword.utterances, {})
    labels = KEYWORDS + list(negatives.NON_KEYWORDS)
    clips = np.zeros((5, 16000), np.float32)
    clips[:, 6000:10000] = 0.3 * np.sin(np.arange(4000) / 5)
    y = np.array([0, 1, 2, 3, 4])
    negs = negatives.Negatives(synth_unknown_fraction=1.0, synth_keyword_fraction=1.0,
                               context_fraction=1.0, synth_plan=synth.Plan())
    waves, out_y = negatives.from_speech(both, clips, y, 10, negs, 16000, rng, labels,
                                         labels.index(negatives.UNKNOWN))
    assert len(waves) == len(out_y) == 30
    assert (out_y[:10] == labels.index(negatives.UNKNOWN)).all()
    assert (out_y[10:20] == labels.index("yes")).all()
    assert set(out_y[20:]) <= set(y)
    context = waves[20:]
    assert np.allclose(context[:, 6000:10000], clips[0, 6000:10000], atol=1e-6)
    assert (np.abs(context[:, :5500]).sum(axis=1) + np.abs(context[:, 10500:]).sum(axis=1)
            > 0).mean() > 0.8  # other speech beside the word


def test_a_synthesized_keyword_is_never_unknown_speech():
    """Speech that holds only synthesized keywords gives keyword windows, no unknown."""
    keyword = made_speech(count=4, seconds=(0.3, 0.6), seed=1, kind="keyword")
    keyword.utterances = [u.__class__(u.text, "keyword", "go", u.voice, u.options)
                          for u in keyword.utterances]
    labels = KEYWORDS + list(negatives.NON_KEYWORDS)
    negs = negatives.Negatives(synth_unknown_fraction=1.0, synth_keyword_fraction=1.0,
                               context_fraction=1.0, synth_plan=synth.Plan())
    clips = np.full((2, 16000), 0.1, np.float32)
    _, out_y = negatives.from_speech(keyword, clips, np.array([0, 1]), 6, negs, 16000,
                                     np.random.default_rng(0), labels,
                                     labels.index(negatives.UNKNOWN))
    assert list(out_y) == [labels.index("go")] * 6


def test_mining_picks_exactly_the_windows_a_keyword_fires_on():
    from common.kws import train
    mask = np.array([True, True, False, False])  # two keywords, background, unknown
    probs = np.array([[0.5, 0.1, 0.2, 0.2],     # reaches the threshold: fired
                      [0.1, 0.49, 0.2, 0.21],   # just under
                      [0.0, 0.0, 0.01, 0.99],   # unknown speech never fires
                      [0.0, 0.9, 0.1, 0.0]])
    assert list(train.fired_windows(probs, mask, 0.5)) == [0, 3]


def test_mining_adds_the_windows_of_the_stream_the_model_fired_on(monkeypatch):
    """A made keyword-free stream with loud bursts, a model that fires on loud
    windows: what is mined is exactly those windows' features."""
    from common.kws import audio, speech, stream, train
    config = audio.FeatureConfig()
    signal = np.zeros(16000 * 6, np.float32)
    signal[16000 * 3:16000 * 3 + 4000] = 0.5  # one burst
    monkeypatch.setattr(stream, "make_recording", lambda *a, **k: stream.Recording(
        "mining", signal, 16000, (), ()))

    class Model:
        def predict(self, x, batch_size=None, verbose=0):
            loud = x[:, :, 0, 0].max(axis=1) > -50  # c0: the burst, not digital silence
            return np.where(loud[:, None], [[9.0, 0, 0, 0]], [[0, 0, 0, 9.0]])

    class Data:
        labels = ["go", "no", "_silence_", "_unknown_"]

        def load(self, rate):
            return speech.Clips(self.labels, {"train": (np.zeros((2, 16000)), [0, 1])}, {})

        def synthesized(self, split, plan):
            return made_speech()
    negs = negatives.Negatives(synth_unknown_fraction=0.1, synth_plan=synth.Plan(),
                               mining_minutes=0.1)
    recipe = type("Recipe", (), {"negatives": negs, "features": config})
    mined, listened = train.mine_hard_negatives(Model(), recipe, Data(), None, 0, 0)
    windows = train.stream_windows(signal, config, train.MINING_HOP_S)
    assert listened == len(windows) == 26
    expected = [i for i in range(len(windows))
                if windows[i][:, 0, 0].max() > -50]
    assert 0 < len(expected) < len(windows)
    assert np.array_equal(mined, windows[expected])


@pytest.mark.parametrize("window, expected", [
    ((2.0, 3.0), 5),       # the whole word (2.2-2.7 s) inside: the keyword
    ((2.25, 3.25), None),  # most of it (90 %): no loss
    ((1.5, 2.5), None),    # 60 % of it: no loss
    ((2.6, 3.6), 9),       # a sliver (20 %): unknown
    ((5.0, 6.0), 9),       # other speech only: unknown
    ((8.0, 9.0), 8),       # nothing said: background
    ((3.95, 4.95), 2),     # two words: the whole one
])
def test_windows_are_labelled_by_how_much_of_a_keyword_they_hold(window, expected):
    words = [(2.2, 2.7, 5), (4.0, 4.5, 2)]
    speech = [(5.5, 7.0)]
    assert negatives.coverage_label(*window, words, speech, 8, 9) == expected


def test_windows_cut_from_a_stream_carry_their_coverage_label():
    from common.kws import stream
    rng = np.random.default_rng(1)
    clips = np.zeros((6, 16000), np.float32)
    clips[:, 5000:11000] = 0.3 * rng.standard_normal((6, 6000))
    rec = stream.make_recording("s", clips, np.arange(6), 16000, None, rng,
                                speech=made_speech(count=6))
    waves, labels = negatives.cut_windows(rec, 200, rng, 8, 9)
    assert len(waves) == len(labels) and 100 < len(waves) <= 200
    assert set(labels) & set(range(6)) and 9 in labels  # keywords and unknown
    for wave, label in zip(waves, labels):  # each window is a piece of the stream
        at = [i for i in np.flatnonzero(rec.signal == wave[0])
              if np.array_equal(rec.signal[i:i + 16000], wave)]
        assert at
        start = at[0] / 16000
        spans = [(s, e) for s, e, k in rec.events if k.startswith("speech")]
        assert negatives.coverage_label(start, start + 1, rec.words, spans, 8, 9) == label


def test_a_window_holding_two_whole_keywords_is_the_later_one():
    words = [(2.1, 2.3, 5), (2.5, 2.8, 2)]
    assert negatives.coverage_label(2.0, 3.0, words, [], 8, 9) == 2
