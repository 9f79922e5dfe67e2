"""Guards for what issue 19's mutation test found unguarded: each test fails when the
property its name states breaks (each was seen failing with its bug planted; the
list is in the issue's closing note). Tiny synthetic data, no training on real data."""
import copy
import dataclasses
import json
import os
import shutil
import subprocess
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

import kws_train
from common import artifacts, pipeline
from common.kws import audio, specaugment, speech
from common.kws import reports
from common.kws import train as kws_train_module
from common.kws.distill import Distillation
from common.kws.features import METADATA as FEATURES_METADATA, features_text
from common.kws.specaugment import SpecAugment
from common.tflite import c_export, tflite_file, training
from common.tflite.runtime import Runner
from conftest import LABELS
from test_cli import run_in_process
from test_regularizers import FakeCorpus, masked_bands, runs
from test_seeds import ConstantTask


def constant_run(tmp_path, capsys, *extra):
    """``ConstantTask`` (seed s ships a model answering s; validation picks seed 1)."""
    return run_in_process(lambda argv: pipeline.main(ConstantTask(), argv), [
        "--version", "x", "--out-dir", str(tmp_path), "--no-micro", "--quiet", *extra],
        capsys)


# --- what ships ----------------------------------------------------------------------

def test_the_shipped_file_is_the_chosen_seeds_model(tmp_path, capsys):
    code, _, _ = constant_run(tmp_path, capsys, "--seeds", "0,1,2")
    report = json.loads((tmp_path / "const_x.json").read_text())
    shipped = (tmp_path / "const_x.tflite.zlib").read_bytes()
    tflite = zlib.decompress(shipped)
    assert code == 0 and report["seed"] == 1
    # the bytes are seed 1's model (it answers 1), not the last seed's (2) or the first's
    assert Runner(tflite)(np.zeros(2, np.float32)) == pytest.approx([1.0])
    assert (len(tflite), len(shipped)) == (report["metrics"]["tflite_bytes"],
                                           report["metrics"]["zlib_bytes"])


def test_evaluate_reports_the_raw_model_size_as_flash(tmp_path, capsys):
    constant_run(tmp_path, capsys)
    path = tmp_path / "const_x.tflite.zlib"
    stored = tmp_path / "stored.tflite.zlib"  # level 0: larger than the raw model
    tflite = zlib.decompress(path.read_bytes())
    stored.write_bytes(zlib.compress(tflite, 0))
    for model in (path, stored):
        file_bytes = os.path.getsize(model)
        assert file_bytes != len(tflite)
        assert artifacts.read_model(str(model)).sizes() == {
            "tflite_bytes": len(tflite), "zlib_bytes": file_bytes}
        _, out, _ = run_in_process(lambda argv: pipeline.main(ConstantTask(), argv), [
            "--version", "x", "--evaluate", str(model), "--no-micro"], capsys)
        row = next(line.split() for line in out.splitlines()
                   if line.startswith(model.name))
        assert row[2:4] == [str(len(tflite)), str(file_bytes)]  # .tflite B, .tflite.zlib B


CHECK_EXPORT = r"""
#include <cstdint>
#include <cstdio>
#include "m_model_data.cc"

static_assert(__alignof__(g_m_model_data) >= 16, "the model array is not 16-byte aligned");

int main() {
  if (reinterpret_cast<std::uintptr_t>(g_m_model_data) % 16 != 0) return 1;
  std::printf("%zu %u\n", sizeof(g_m_model_data), g_m_model_data_len);
  std::fwrite(g_m_model_data, 1, g_m_model_data_len, stdout);
  return 0;
}
"""


@pytest.mark.skipif(not shutil.which("g++"), reason="needs g++")
def test_c_export_length_matches_the_array_and_the_array_is_aligned(tmp_path):
    model = bytes(np.random.default_rng(0).integers(0, 256, 1001, dtype=np.uint8))
    for name, text in c_export.c_source("m", model, 1234, [1, 49, 10, 1], (0.5, -3),
                                        (0.25, 7), LABELS).items():
        (tmp_path / name).write_bytes(text)
    (tmp_path / "check.cc").write_text(CHECK_EXPORT)
    compiled = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-o", "check",
                               "check.cc"], cwd=tmp_path, capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr  # static_assert: the alignment
    result = subprocess.run(["./check"], cwd=tmp_path, capture_output=True, check=True)
    sizes, data = result.stdout.split(b"\n", 1)
    assert sizes.decode().split() == ["1001", "1001"]  # sizeof(array), the length constant
    assert data == model


# --- augmentation ----------------------------------------------------------------

def quiet_augmentation(**fields):
    """No noise, gain 1, no shift unless ``fields`` say otherwise."""
    return speech.Augmentation(**{"max_shift_s": 0.0, "gain_range": (1.0, 1.0),
                                  "clean_fraction": 1.0, **fields})


def test_augment_shifts_are_zero_filled_moves_both_ways_negative_earlier():
    length, n = 1000, 300
    ramp = np.linspace(0.1, 0.9, length, dtype=np.float32)  # no zero sample anywhere
    out = speech.augment(np.tile(ramp, (n, 1)), quiet_augmentation(max_shift_s=0.05),
                         np.random.default_rng(0), 16000)
    shifts = []
    for row in out:
        leading = int(np.argmax(row != 0))
        trailing = int(np.argmax(row[::-1] != 0))
        assert leading == 0 or trailing == 0
        shift = leading - trailing  # > 0: later (zeros first), < 0: earlier (zeros last)
        expected = np.zeros(length, np.float32)
        if shift >= 0:
            expected[shift:] = ramp[:length - shift]
        else:
            expected[:shift] = ramp[-shift:]  # starts -shift samples into the clip
        np.testing.assert_array_equal(row, expected)
        shifts.append(shift)
    assert min(shifts) <= -40 and max(shifts) >= 40 and all(abs(s) <= 50 for s in shifts)
    assert 0.35 < np.mean(np.array(shifts) < 0) < 0.65


def test_augment_gives_each_example_its_own_gain():
    n = 200
    out = speech.augment(np.full((n, 100), 0.5, np.float32),
                         quiet_augmentation(gain_range=(0.5, 1.5)), np.random.default_rng(0),
                         16000)
    gains = out[:, 0] / 0.5
    np.testing.assert_allclose(out, np.broadcast_to(0.5 * gains[:, None], out.shape),
                               rtol=1e-6)  # one gain a row
    assert len(np.unique(gains)) == n and 0.5 <= gains.min() and gains.max() <= 1.5
    assert gains.std() > 0.2  # uniform over [0.5, 1.5]: std 0.29


def test_background_speech_never_comes_from_the_example_itself():
    """Clip i is a pure tone of ``3 + 5 i`` cycles (circular shifts keep it so): what
    was added to a clip is another clip's tone, never its own."""
    n, length = 4, 512
    t = np.arange(length) / length
    cycles = 3 + 5 * np.arange(n)
    clips = (0.3 * np.sin(2 * np.pi * cycles[:, None] * t)).astype(np.float32)
    aug = quiet_augmentation(clean_fraction=0.0, speech_fraction=1.0,
                             snr_db_range=(6.0, 6.0))
    sources = []
    for seed in range(60):
        added = speech.augment(clips, aug, np.random.default_rng(seed), 16000) - clips
        spectrum = np.abs(np.fft.rfft(added, axis=1))
        sources.append([int(np.flatnonzero(cycles == k)[0])
                        for k in spectrum.argmax(axis=1)])
    sources = np.array(sources)
    assert not (sources == np.arange(n)).any()
    assert all(len(set(sources[:, i])) == n - 1 for i in range(n))  # every other clip


# --- SpecAugment --------------------------------------------------------------------

def test_specaugment_mask_widths_reach_their_maximum():
    x = np.random.default_rng(0).normal(3.0, 1.0, (400, 20, 10, 1)).astype(np.float32)
    spec = SpecAugment(time_masks=1, max_time_width=4, freq_masks=1, max_freq_width=3)
    bands = masked_bands(x, np.asarray(specaugment.masker(spec)(x, np.zeros(400))[0]))
    row_widths = [sum(runs(rows)) for rows, _, _ in bands]
    col_widths = [sum(runs(cols)) for _, cols, _ in bands]
    # uniform in [0, max]: every width occurs, the maximum included, none above it
    assert set(row_widths) == {0, 1, 2, 3, 4} and set(col_widths) == {0, 1, 2, 3}


class Stop(Exception):
    pass


def test_kws_passes_the_recipes_masker_to_training_and_never_masks_validation(
        monkeypatch):
    made, seen = [], []
    real_masker = specaugment.masker

    def masker(spec):
        made.append((spec, real_masker(spec)))
        return made[-1][1]

    def fit(model, train, val, settings, **kwargs):
        seen.append((val, kwargs["batch_transform"]))
        raise Stop

    monkeypatch.setattr(specaugment, "masker", masker)
    monkeypatch.setattr(training, "fit", fit)
    rng = np.random.default_rng(0)
    features = SimpleNamespace(labels=LABELS,
                               train=(rng.normal(size=(16, 49, 10, 1)), np.arange(16) % 8),
                               val=(rng.normal(size=(8, 49, 10, 1)), np.arange(8)))
    for recipe in (kws_train.RECIPES["b"],
                   dataclasses.replace(kws_train.RECIPES["b"], spec_augment=None)):
        with pytest.raises(Stop):
            kws_train_module.fit_ds_cnn(recipe, features, features.train[1], 0, False)
    for val, _ in seen:  # validation as it is, unmasked
        assert val[0] is features.val[0] and val[1] is features.val[1]
    assert [spec for spec, _ in made] == [kws_train.RECIPES["b"].spec_augment]
    assert seen[0][1] is made[0][1] and seen[1][1] is None


def test_fit_never_masks_validation_batches():
    """With a transform that shifts every training batch far off, the validation
    loss fit reports is still the loss on the real validation inputs."""
    from test_model_guards import fit_ds_cnn, textures
    train, val = textures(64, 0), textures(32, 1)
    model, info = fit_ds_cnn(train, val, epochs=1, batch_size=16,
                             batch_transform=lambda x, y: (x + 10.0, y))
    import tf_keras as keras
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    real = float(loss(val[1], model.predict(val[0], verbose=0)))
    shifted = float(loss(val[1], model.predict(val[0] + 10.0, verbose=0)))
    assert abs(real - shifted) > 1e-3  # the two can be told apart
    assert info["val_loss"][0] == pytest.approx(real, rel=1e-4)


# --- cache keys ---------------------------------------------------------------------

def changed(value):
    """A value unlike ``value`` (no validation: keys only read the fields)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, tuple):
        return value + (1,)
    return ("changed",)  # None


def variants(obj, path=()):
    """``(field path, a copy of obj with that one field changed)`` for every field,
    nested dataclasses field by field (set past their validation)."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        inner = (list(variants(value, path + (field.name,)))
                 if dataclasses.is_dataclass(value) else
                 [(path + (field.name,), changed(value))])
        for name, new in inner:
            twin = copy.copy(obj)
            object.__setattr__(twin, field.name, new)
            yield name, twin


BUDGET_OR_STUDENT = ("sparsity", "prune_epochs", "prune_depthwise", "quantization",
                     "distillation")  # what the teacher (dense, float) never uses


def test_every_teacher_recipe_field_changes_the_teacher_cache_key():
    """Every field of KwsRecipe, nested ones included (those added later too), keys
    the teacher's cache, except the budgets (max_*, min_*) and the student's own."""
    teacher = dataclasses.replace(kws_train.RECIPES["c"], alpha=1.0,
                                  spec_augment=SpecAugment(fill="column"))
    y = np.arange(16) % 8
    features = SimpleNamespace(train=(None, y), val=(None, y[:8]))

    def key(teacher):
        return kws_train_module.teacher_cache_key(teacher, FakeCorpus(), features)

    base, keys, ignored = key(teacher), {}, []
    for path, twin in variants(teacher):
        if path[0].startswith(("max_", "min_")) or path[0] in BUDGET_OR_STUDENT:
            ignored.append(path[0])
            assert key(twin) == base, path
        else:
            keys[path] = key(twin)
    assert base not in keys.values(), [p for p, k in keys.items() if k == base]
    assert len(set(keys.values())) == len(keys)
    assert {"features", "augmentation", "spec_augment", "batch_size"} <= {
        p[0] for p in keys}
    assert {"max_zlib_bytes", "min_accuracy", "sparsity"} <= set(ignored)
    # a first_stride of None is the kind's default: the same teacher
    assert key(dataclasses.replace(teacher, first_stride=None)) == base


def test_the_feature_cache_is_keyed_by_everything_that_changes_the_features(
        monkeypatch):
    """Corpus.data computes features anew for any change of the feature configuration
    or the augmentation (every field), and only then."""
    clips = speech.Clips(list(LABELS), {"train": (np.zeros((2, 16000), np.float32),
                                                  np.zeros(2, np.int64))}, {})
    calls = []

    def featurize(clips, config, aug, seed, tick=None):
        calls.append((config, aug))
        empty = (np.zeros((0, 1)), np.zeros(0))
        return speech.SpeechData(clips.labels, empty, empty, empty)

    monkeypatch.setattr(speech, "featurize", featurize)
    # the changed configurations are not valid ones: give them all one shape
    monkeypatch.setattr(audio.FeatureConfig, "shape", property(lambda self: (2, 2, 1)))
    corpus = speech.Corpus("data", "splits", 0)
    monkeypatch.setattr(corpus, "load", lambda rate: clips)
    recipe = kws_train.RECIPES["c"]
    corpus.data(recipe)
    corpus.data(dataclasses.replace(recipe, alpha=0.5, max_zlib_bytes=1, epochs=1))
    assert len(calls) == 1  # the model's settings share the features
    for name in ("features", "augmentation"):
        for path, twin in variants(getattr(recipe, name)):
            before = len(calls)
            corpus.data(dataclasses.replace(recipe, **{name: twin}))
            assert len(calls) == before + 1, (name, path)


# --- labels -----------------------------------------------------------------------

def confusion_pairs(out):
    """``{(true label, predicted label): count}`` from the summary's confusion table."""
    lines = out.splitlines()
    start = lines.index("confusion (rows: true label, columns: predicted)")
    header = lines[start + 1].split()
    pairs = {}
    for line in lines[start + 3:start + 3 + len(header) - 2]:
        cells = line.split()
        pairs.update({(cells[0], predicted): int(count)
                      for predicted, count in zip(header[1:-1], cells[1:-1])
                      if int(count)})
    return pairs


def test_a_model_with_unsorted_labels_is_read_in_its_own_order(tmp_path, speech_dir,
                                                                capsys, monkeypatch):
    """The same random classifier twice: with sorted labels, and with its outputs
    and labels reversed (no label keeps its index). --evaluate must find the same
    predictions, clip by clip. (The noise and listening reports are left out: they
    read the same labels, and take minutes.)"""
    import tf_keras as keras
    for report in ("noise_report", "robustness_report", "listening_report"):
        monkeypatch.setattr(reports, report, lambda *args: ({}, {}))
    from common.tflite import optimize
    config = kws_train.RECIPES["b"].features
    inputs = keras.Input(config.shape)
    model = keras.Model(inputs, keras.layers.Dense(8, kernel_initializer=keras.initializers
                                                   .RandomNormal(seed=0))(
        keras.layers.Flatten()(inputs)))
    weights = model.get_weights()
    reversed_model = keras.models.clone_model(model)
    reversed_model.set_weights([weights[0][:, ::-1], weights[1][::-1]])
    argv = ["--version", "b", "--data-dir", str(speech_dir), "--split-dir",
            str(speech_dir), "--no-download", "--latency-runs", "1", "--latency-pause",
            "0", "--no-micro", "--quiet"]
    results = []
    for name, net, labels in (("sorted", model, LABELS),
                              ("reversed", reversed_model, LABELS[::-1])):
        tflite = tflite_file.with_metadata(
            tflite_file.with_labels(optimize.convert(net, "float"), labels),
            FEATURES_METADATA, features_text(config))
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(tflite)
        code, out, err = run_in_process(kws_train.main, argv + ["--evaluate", str(path)],
                                        capsys)
        assert code in (0, 3), err
        results.append(confusion_pairs(out))
    assert results[0] == results[1] and sum(results[0].values()) == 8


# --- messages -----------------------------------------------------------------------

def test_int8_conversion_prints_no_stray_native_line_unless_verbose(capfd, monkeypatch):
    import common
    import tf_keras as keras
    from common.tflite import optimize
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    samples = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    for quiet in (True, False):
        monkeypatch.setattr(common, "_quiet", quiet)
        optimize.convert(model, "int8", samples)
        err = capfd.readouterr().err
        assert ("fully_quantize" in err) == (not quiet), err


def test_an_unwritable_teacher_cache_is_a_stderr_warning_and_not_called_cached(
        tmp_path, monkeypatch, capsys):
    y = np.arange(16) % 8
    features = SimpleNamespace(train=(np.zeros((16, 2)), y), val=(np.zeros((8, 2)), y[:8]))

    def fit(recipe, features, targets, seed, verbose):
        return SimpleNamespace(predict=lambda x, **kw: np.zeros((len(x), 8))), {
            "best_val_loss": 1.0}

    monkeypatch.setattr(kws_train_module, "fit_ds_cnn", fit)
    recipe = dataclasses.replace(kws_train.RECIPES["b"], distillation=Distillation())
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "cache").write_text("")  # the cache folder cannot be made
    for data_dir, cached in ((tmp_path / "blocked", False), (tmp_path / "ok", True)):
        corpus = FakeCorpus()
        corpus.data_dir = str(data_dir)
        _, info = kws_train_module.Teachers().get(recipe, corpus, features, False)
        captured = capsys.readouterr()
        assert ("logits cached in" in captured.out) == cached
        assert ("warning: teacher cache not written" in captured.err) == (not cached)
        assert "warning" not in captured.out
        assert (info["cache"] is not None) == cached
    assert len(os.listdir(tmp_path / "ok" / "cache")) == 1


def test_the_summary_says_where_the_time_went(tmp_path, capsys):
    _, out, _ = constant_run(tmp_path, capsys, "--seeds", "0,1")
    line = next(l for l in out.splitlines() if l.startswith("wrote "))
    total, parts = line.split("; ", 1)[1].split(" s in all: ")
    seconds = {}
    for part in parts.split(", "):  # "measuring 1.2 s"
        name, value, unit = part.rsplit(" ", 2)
        seconds[name] = float(value)
    assert {"loading", "training (2 seeds)", "measuring"} <= set(seconds)
    assert sum(seconds.values()) == pytest.approx(float(total), abs=0.1 * len(seconds))


def test_latency_records_the_host_load_and_warns_once_when_busy(monkeypatch, capsys):
    import tf_keras as keras
    from common.tflite import optimize, runtime
    inputs = keras.Input((4,))
    tflite = optimize.convert(keras.Model(inputs, keras.layers.Dense(2)(inputs)), "float")
    cores = os.cpu_count()
    monkeypatch.setattr(runtime, "_warned_busy", False)
    for load, busy in ((0.2, False), (1.0 + 0.6 * cores, True), (1.0 + 0.6 * cores, True)):
        monkeypatch.setattr(runtime, "load_average", lambda: [load, load, load])
        result = runtime.measure_latency(tflite, lambda: np.zeros(4, np.float32),
                                         lambda raw: raw, runs=2, warmup=0)
        assert result["host_load"] == {"before": [load] * 3, "after": [load] * 3,
                                       "cores": cores, "busy": busy}
    err = capsys.readouterr().err
    assert err.count("warning: the host was busy while timing") == 1, err
    assert len(err.strip().splitlines()) == 1


def test_feature_extraction_shows_progress_on_one_line_unless_quiet(speech_dir, capsys,
                                                                    monkeypatch):
    from common import cli, progress
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    monkeypatch.setattr(progress, "on_terminal", lambda: True)  # \r: a terminal's form
    recipe = dataclasses.replace(kws_train.RECIPES["b"],
                                 augmentation=speech.Augmentation(copies=1))
    for quiet in (False, True):
        cli.base_parser("", {"b": None}).parse_args(
            ["--version", "b"] + (["--quiet"] if quiet else []))
        corpus = speech.Corpus(str(speech_dir), str(speech_dir), 0)
        corpus.data(recipe)
        out = capsys.readouterr().out
        updates = out.count("\r")
        last = out.split("\r")[-1]
        assert last.startswith("mfcc features [49, 10, 1] of 64 examples in ")
        assert last.count("\n") == 1  # the closing line alone ends a line
        if quiet:
            assert updates == 0
        else:  # 24 training clips, their 24 copies, 8 + 8: one update each, then clear
            assert "mfcc features [49, 10, 1]: 64/64 (100%)" in out and updates >= 64
    progress.set_quiet(False)
