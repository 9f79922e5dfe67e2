import zlib

import numpy as np
import pytest

from common import artifacts
from common.errors import UserError
from common.forecast import jena
from common.forecast import model as forecast_model
from common.kws import model as kws_model
from common.tflite import optimize, training
from common.tflite.runtime import Runner

NORMALIZER = jena.Normalizer(mean=(10.0, 60.0), std=(5.0, 20.0))


def tiny_regression(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (x[:, -2:].repeat(6, axis=0).reshape(n, 12) * 5 + 10).astype(np.float32)
    return x, y


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_pruning_reaches_target_sparsity(sparsity):
    x, y = tiny_regression()
    model, info = training.fit(
        forecast_model.mlp(0.3, 1, NORMALIZER), (x, y), (x[:64], y[:64]),
        training.TrainingSettings(epochs=4, batch_size=32, learning_rate=0.01,
                                  sparsity=sparsity, prune_epochs=(1, 3)),
        loss="mae", verbose=0)
    reached = optimize.weight_sparsity(model)
    assert set(reached) == {"hidden1", "change"}   # the frozen skip is not pruned
    for value in reached.values():
        assert value == pytest.approx(sparsity, abs=0.01)
    assert info["best_epoch"] >= 3  # chosen only after pruning finished
    assert info["dense_layers"] == []  # every trainable kernel was pruned
    assert not any("prune" in layer.name for layer in model.layers)  # stripped


def test_tflite_weight_sparsity_reads_the_shipped_weights():
    model = forecast_model.mlp(0.3, 1, NORMALIZER)
    kernel, bias = model.get_layer("hidden1").get_weights()  # [12 inputs, 38 units]
    kernel[:3] = 0.0
    model.get_layer("hidden1").set_weights([kernel, bias])
    tensors = optimize.tflite_weight_sparsity(optimize.convert(model, "float"))
    by_shape = {tuple(t["shape"]): t["zeros"] for t in tensors}
    assert by_shape[(38, 12)] == pytest.approx(0.25)  # TFLite stores [units, inputs]
    assert by_shape[(12, 38)] == 1.0  # the head starts at zero
    assert all(t["type"] == "float32" for t in tensors)


def test_step_schedule():
    lr = training.step_schedule(0.1, (10, 50, 60))
    assert [lr(e) for e in (0, 9, 10, 49, 50, 60)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001])


def test_int8_conversion_has_int8_weights_and_runs():
    model = kws_model.ds_cnn(0.1, (49, 10, 1), (2, 1))
    calibration = np.random.default_rng(0).normal(size=(20, 49, 10, 1)).astype(np.float32)
    tflite = optimize.convert(model, "int8", calibration)
    types = optimize.weight_types(tflite)
    assert types and set(types) == {"int8"}
    runner = Runner(tflite)
    assert runner.input["dtype"] == np.int8
    assert runner(calibration[0]).shape == (8,)


def test_depthwise_pruning_leaves_unpruned_conversion_unchanged():
    """Issue 10: only ``prune`` swaps in PrunableDepthwiseConv2D, and ``strip`` swaps
    it back, so an unpruned model (kws b, c) converts to the same bytes, and a
    prune/strip round trip without training leaves no trace in config or file."""
    training.set_seed(0)
    model = kws_model.ds_cnn(0.05, (49, 10, 1), (2, 1))
    calibration = np.random.default_rng(0).normal(size=(8, 49, 10, 1)).astype(np.float32)
    reference = optimize.convert(model, "int8", calibration)
    config = model.get_config()
    classes = [layer["class_name"] for layer in config["layers"]]
    assert classes.count("DepthwiseConv2D") == 2 and "Prunable" not in str(config)
    pruned, dense = optimize.prune(model, 0.8, 0, 10, frequency=10)
    assert dense == [] and sum(isinstance(getattr(layer, "layer", None),
                                          optimize.PrunableDepthwiseConv2D)
                               for layer in pruned.layers) == 2
    stripped = optimize.strip(pruned)
    assert stripped.get_config() == config
    assert optimize.convert(stripped, "int8", calibration) == reference
    assert optimize.convert(model, "int8", calibration) == reference  # model untouched
    assert optimize.strip(model).get_config() == config  # no-op without pruning


def test_float_conversion_matches_keras_and_slim_removes_names():
    x, _ = tiny_regression(8)
    model = forecast_model.mlp(0.3, 1, NORMALIZER)
    model.get_layer("change").set_weights(
        [w + 0.1 for w in model.get_layer("change").get_weights()])
    tflite = optimize.convert(model, "float")
    assert set(optimize.weight_types(tflite)) == {"float32"}
    np.testing.assert_allclose(Runner(tflite).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-4)
    assert b"serving_default" not in tflite and b"hidden1" not in tflite


def test_int16x8_keeps_persistence_precise():
    model = forecast_model.mlp(0.3, 1, NORMALIZER)
    x, _ = tiny_regression(64)
    tflite = optimize.convert(model, "int16x8", x)
    runner = Runner(tflite)
    assert runner.input["dtype"] == np.int16
    np.testing.assert_allclose(runner.predict(x[:8]), model.predict(x[:8], verbose=0),
                               atol=0.02)


def test_round_mantissa_bounds_error_and_keeps_frozen_layers():
    model = forecast_model.mlp(0.3, 1, NORMALIZER)
    before = [layer.get_weights() for layer in model.layers]
    optimize.round_mantissa(model, 8)
    for layer, old in zip(model.layers, before):
        for w_old, w_new in zip(old, layer.get_weights()):
            if layer.trainable:
                np.testing.assert_allclose(w_new, w_old, rtol=2.0 ** -9)
                low_bits = w_new.view(np.uint32) & ((1 << 15) - 1)
                assert not low_bits.any()
            else:
                np.testing.assert_array_equal(w_new, w_old)


def test_zlib_file_round_trips_and_corrupt_file_is_rejected(tmp_path):
    tflite = optimize.convert(forecast_model.mlp(0.1, 1, NORMALIZER), "float")
    compressed = artifacts.compress(tflite)
    assert zlib.decompress(compressed) == tflite
    path, _ = artifacts.publish(str(tmp_path), {"m.tflite.zlib": compressed,
                                                "m.json": artifacts.json_bytes({"x": 1})})
    assert artifacts.read_model(path).tflite_bytes == tflite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.tflite.zlib"]
    bad = tmp_path / "bad.tflite.zlib"
    bad.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(UserError, match="not a valid zlib"):
        artifacts.read_model(str(bad))
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"hello world, not a model")
    with pytest.raises(UserError, match="not a TFLite model"):
        artifacts.read_model(str(not_tflite))
