"""Tests that guard the trained model itself (issue 8): each fails when a bug ruins
what ships while the files still get written. Small models, few epochs."""
import inspect
import json

import numpy as np
import pytest
import tf_keras as keras

import forecast_train
import kws_train
from common.cli import run_main
from common.kws import model as kws_model
from common.tflite import optimize, training
from common.tflite.runtime import Runner
from conftest import LABELS, write_jena_csv, write_wav

CALIBRATION_SIGMAS = 5.0  # docs/forecasting.md: calibration covers +/- 5 std


# --- fixtures -----------------------------------------------------------------

def textures(n, seed, shape=(16, 8, 1)):
    """Four classes a 3x3 convolution tells apart (row stripes, column stripes, a
    checkerboard, flat), plus noise, around a non-zero mean; labels cycle 0..3."""
    rng = np.random.default_rng(seed)
    rows = np.arange(shape[0])[:, None, None] % 2
    cols = np.arange(shape[1])[None, :, None] % 2
    patterns = np.stack([np.broadcast_to(p, shape).astype(np.float32)
                         for p in (rows, cols, (rows + cols) % 2, 0.5)]) * 2
    y = np.arange(n) % 4
    x = rng.normal(1.0, 0.5, (n,) + shape).astype(np.float32) + patterns[y]
    return x, y.astype(np.int64)


def fit_ds_cnn(train, val, epochs, batch_size, sparsity=0.0, prune_epochs=(0, 1),
               prune_depthwise=True, **kwargs):
    training.set_seed(0)
    return training.fit(
        kws_model.ds_cnn(0.05, train[0].shape[1:], (2, 1), n_classes=4), train, val,
        training.TrainingSettings(epochs=epochs, batch_size=batch_size, learning_rate=0.01,
                                  sparsity=sparsity, prune_epochs=prune_epochs,
                                  prune_depthwise=prune_depthwise),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], verbose=0, **kwargs)


def tflite_ops(tflite_bytes):
    """The builtin op name of every operator in a .tflite, in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for sg in model.subgraphs for op in sg.operators]


def tone_dataset(root, counts, seed=0):
    """A Mini-Speech-Commands look-alike where each label is its own tone (400 Hz
    apart, 2 % jitter, varied level, length and onset): separable by design.
    ``counts``: clips per label for each split."""
    rng = np.random.default_rng(seed)
    lines = {split: [] for split in counts}
    for k, label in enumerate(LABELS):
        n = 0
        for split, count in counts.items():
            for _ in range(count):
                freq = (400 + 400 * k) * rng.uniform(0.98, 1.02)
                t = np.arange(int(16000 * rng.uniform(0.7, 1.0))) / 16000
                samples = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * freq * t)
                samples = np.concatenate([np.zeros(rng.integers(0, 1600)), samples])
                name = f"clip{n}_nohash_0.wav"
                write_wav(root / "mini_speech_commands" / label / name, samples[:16000])
                lines[split].append(f"./data/mini_speech_commands/{label}/{name}")
                n += 1
    for split, entries in lines.items():
        (root / f"kws_{split}_split.txt").write_text("\n".join(entries) + "\n")
    return root


def run_cli(main, argv, capsys):
    """A script's command line in-process: ``(exit code, stdout)``."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    return exit_info.value.code, capsys.readouterr().out


def kws_argv(data_dir, out_dir, *extra):
    return ["--data-dir", str(data_dir), "--split-dir", str(data_dir), "--out-dir",
            str(out_dir), "--no-download", "--latency-runs", "2", "--latency-pause", "0",
            "--listening-minutes", "0.05", "--quiet", *extra]


class Spies:
    """Record what the scripts pass to ``training.fit`` and ``optimize.convert``
    (then call the real functions): the only internals these tests intercept."""

    def __init__(self, monkeypatch):
        self.fits, self.converts = [], []
        real_fit, real_convert = training.fit, optimize.convert

        def fit(model, train, val, settings, **kwargs):
            self.fits.append({"train": train, "val": val})
            return real_fit(model, train, val, settings, **kwargs)

        def convert(*args, **kwargs):
            bound = inspect.signature(real_convert).bind(*args, **kwargs)
            self.converts.append(dict(bound.arguments))
            return real_convert(*args, **kwargs)

        monkeypatch.setattr(training, "fit", fit)
        monkeypatch.setattr(optimize, "convert", convert)


def row_set(x):
    """The rows of ``x`` (one per sample, flattened) as a set of bytes."""
    rows = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
    return {row.tobytes() for row in rows}


def fitted_rows(spies):
    """The training and validation inputs every ``training.fit`` call received."""
    assert spies.fits
    train = set().union(*(row_set(f["train"][0]) for f in spies.fits))
    val = set().union(*(row_set(f["val"][0]) for f in spies.fits))
    return train, val


# --- 2. the int8 .tflite agrees with the Keras model --------------------------

def test_int8_tflite_agrees_with_trained_keras_model():
    train, val, test = textures(256, 0), textures(64, 1), textures(128, 2)
    model, _ = fit_ds_cnn(train, val, epochs=5, batch_size=16)
    keras_pred = model.predict(test[0], verbose=0).argmax(axis=1)
    tflite = optimize.convert(model, "int8", train[0][::4])
    runner = Runner(tflite)
    assert runner.input["dtype"] == np.int8 and runner.input["quantization"][1] != 0
    tflite_pred = runner.predict(test[0]).argmax(axis=1)
    assert (keras_pred == test[1]).mean() >= 0.95  # the fixture is learnt
    assert (tflite_pred == keras_pred).mean() >= 0.95
    assert (tflite_pred == test[1]).mean() >= 0.95


# --- 3. calibration uses training data only ----------------------------------

def test_kws_calibrates_on_training_features_only(tmp_path, monkeypatch, capsys):
    data_dir = tone_dataset(tmp_path / "speech", {"train": 2, "val": 1, "test": 1})
    spies = Spies(monkeypatch)
    code, _ = run_cli(kws_train.main, ["--version", "b", *kws_argv(
        data_dir, tmp_path / "out", "--epochs", "1", "--alpha", "0.05")], capsys)
    assert code in (0, 3)
    train, val = fitted_rows(spies)
    assert not train & val  # distinct clips: the check below can tell the splits apart
    calibrations = [c["calibration"] for c in spies.converts
                    if c.get("calibration") is not None]
    assert calibrations  # the int8 model was calibrated
    for calibration in calibrations:
        rows = row_set(calibration)
        stray = rows - train  # test or validation features, or anything else
        assert not stray, (f"{len(stray)} of {len(rows)} calibration rows are not "
                           "training features")
        assert len(rows) > len(LABELS)  # spread over the training set, not one clip


def test_forecast_calibrates_on_training_windows_and_extremes(tmp_path, monkeypatch,
                                                              capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    spies = Spies(monkeypatch)
    code, _ = run_cli(forecast_train.main, [
        "--version", "a", "--csv", str(csv), "--epochs", "1", "--quiet",
        "--out-dir", str(tmp_path / "out")], capsys)
    assert code in (0, 3)
    train, val = fitted_rows(spies)
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
    extremes = row_set(np.tile(signs * CALIBRATION_SIGMAS, (1, 6)))  # 6 steps x (T, RH)
    calibrations = [c["calibration"] for c in spies.converts
                    if c.get("calibration") is not None]
    assert calibrations
    for calibration in calibrations:
        rows = row_set(calibration)
        assert extremes <= rows, "the +/-5 sigma windows are missing"
        stray = rows - extremes - train
        assert not stray, f"{len(stray)} calibration windows are not training windows"
        assert not rows & val and len(rows - extremes) > 100  # many training windows


# --- 4. the shipped .tflite has the recipe's sparsity -------------------------

@pytest.fixture(scope="module")
def pruned_ds_cnn():
    train, val = textures(128, 0), textures(32, 1)
    model, info = fit_ds_cnn(train, val, epochs=4, batch_size=32, sparsity=0.8,
                             prune_epochs=(1, 2))
    return model, info, train[0][::4]


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_pruned_tflite_weights_are_sparse(pruned_ds_cnn, mode):
    model, info, calibration = pruned_ds_cnn
    tflite = optimize.convert(model, mode, calibration)
    tensors = optimize.tflite_weight_sparsity(tflite)
    filters = kws_model.filters(0.05)
    depthwise = [t for t in tensors if t["shape"] == [1, 3, 3, filters]]  # TFLite layout
    kernels = [t for t in tensors if t not in depthwise]
    assert len(depthwise) == 2 and len(kernels) == 4  # conv, pw1, pw2, logits
    for t in kernels + depthwise:  # depthwise too: PrunableDepthwiseConv2D (issue 10)
        assert t["zeros"] == pytest.approx(0.8, abs=0.03), t
    assert info["dense_layers"] == []
    # strip gave back plain layers: the file has the plain depthwise op
    assert [type(layer) for layer in model.layers
            if isinstance(layer, keras.layers.DepthwiseConv2D)] == [
                keras.layers.DepthwiseConv2D] * 2
    assert tflite_ops(tflite).count("DEPTHWISE_CONV_2D") == 2


def test_depthwise_pruning_can_be_turned_off():
    train, val = textures(64, 0), textures(16, 1)
    model, info = fit_ds_cnn(train, val, epochs=2, batch_size=32, sparsity=0.8,
                             prune_epochs=(0, 1), prune_depthwise=False)
    assert info["dense_layers"] == ["dw1", "dw2"]
    reached = optimize.weight_sparsity(model)
    assert reached["dw1"] < 0.2 and reached["dw2"] < 0.2
    assert reached["pw1"] == pytest.approx(0.8, abs=0.03)


# --- 5. the kept checkpoint comes from after pruning -------------------------

class FakeModel:
    def __init__(self):
        self.weights = None

    def get_weights(self):
        return [self.weights.copy()]

    def set_weights(self, weights):
        self.weights = weights[0].copy()


def test_best_on_validation_ignores_epochs_before_first_epoch():
    model = FakeModel()
    best = training.BestOnValidation(first_epoch=2)
    best.set_model(model)
    for epoch, val_loss in enumerate([0.1, 0.9, 0.5, 0.4, 0.6]):
        model.weights = np.array([epoch], np.float32)
        best.on_epoch_end(epoch, {"val_loss": val_loss})
    best.on_train_end()
    assert best.best_epoch == 3 and model.weights[0] == 3  # not epoch 0's lower loss


def test_fit_keeps_a_pruned_epoch_even_when_a_dense_one_was_better():
    # a dense random linear map: pruning 90 % of it must hurt the validation loss
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 16)).astype(np.float32)
    x = rng.normal(size=(640, 16)).astype(np.float32)
    train, val = (x[:512], x[:512] @ w), (x[512:], x[512:] @ w)
    training.set_seed(0)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(16, use_bias=False, name="map")(inputs))
    model, info = training.fit(
        model, train, val, training.TrainingSettings(
            epochs=5, batch_size=32, learning_rate=0.05, sparsity=0.9, prune_epochs=(2, 3)),
        loss="mse", verbose=0)
    losses = info["val_loss"]
    assert min(losses[:3]) < 0.5 * min(losses[3:])  # dense epochs really were better
    assert info["best_epoch"] >= 4  # 1-based: after pruning ended at epoch index 3
    assert optimize.weight_sparsity(model)["map"] == pytest.approx(0.9, abs=0.01)
    restored = np.mean((model.predict(val[0], verbose=0) - val[1]) ** 2)
    assert restored == pytest.approx(info["best_val_loss"], rel=1e-3)  # its weights


# --- 7. a short end-to-end run learns a separable fixture ---------------------

def test_kws_end_to_end_reaches_high_accuracy_on_tones(tmp_path, capsys):
    data_dir = tone_dataset(tmp_path / "speech", {"train": 6, "val": 2, "test": 2})
    out = tmp_path / "out"
    code, _ = run_cli(kws_train.main, ["--version", "b", *kws_argv(
        data_dir, out, "--epochs", "30", "--alpha", "0.2")], capsys)
    assert code in (0, 3)
    report = json.loads((out / "kws_b.json").read_text())
    assert report["metrics"]["clips"] == 2 * len(LABELS)
    assert report["metrics"]["accuracy"] >= 0.9, report["metrics"]


# --- 8. pruning says which layers stay dense ----------------------------------

def test_prune_reports_dense_layers_and_rejects_unknown_ones():
    model = kws_model.ds_cnn(0.05, (16, 8, 1), (2, 1), n_classes=4)
    pruned, dense = optimize.prune(model, 0.5, 0, 10, frequency=10)
    wrapped = [layer.name for layer in pruned.layers if "prune_low_magnitude" in layer.name]
    assert sorted(wrapped) == sorted(f"prune_low_magnitude_{name}" for name in
                                     ("conv", "dw1", "pw1", "dw2", "pw2", "logits"))
    assert dense == []
    pruned, dense = optimize.prune(model, 0.5, 0, 10, frequency=10, depthwise=False)
    wrapped = [layer.name for layer in pruned.layers if "prune_low_magnitude" in layer.name]
    assert sorted(wrapped) == sorted(f"prune_low_magnitude_{name}"
                                     for name in ("conv", "pw1", "pw2", "logits"))
    assert dense == ["dw1", "dw2"]

    class Custom(keras.layers.Dense):  # tfmot's registry matches exact types
        pass

    inputs = keras.Input((4,))
    odd = keras.Model(inputs, Custom(2, name="custom")(inputs))
    with pytest.raises(ValueError, match="'custom' of type Custom"):
        optimize.prune(odd, 0.5, 0, 10)
