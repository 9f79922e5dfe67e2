import numpy as np
import pytest

from common.forecast import jena
from common.forecast import model as forecast_model
from common.kws import model as kws_model

NORMALIZER = jena.Normalizer(mean=(10.0, 60.0), std=(5.0, 20.0))


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("alpha, layers, expected", [
    (0.3, 1, 12 * 38 + 38 + 38 * 12 + 12),                  # MLP1: 38 units
    (0.1, 2, 12 * 12 + 12 + 12 * 12 + 12 + 12 * 12 + 12),   # MLP2: 12 units
    (1.0, 1, 12 * 128 + 128 + 128 * 12 + 12),
])
def test_mlp_parameter_counts(alpha, layers, expected):
    model = forecast_model.mlp(alpha, layers, NORMALIZER)
    assert trainable_params(model) == expected
    assert model.output_shape == (None, 12)
    # the persistence skip is frozen: 12x12 kernel + 12 biases, not trained
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 156


def test_untrained_mlp_forecasts_persistence():
    model = forecast_model.mlp(0.3, 2, NORMALIZER)
    raw = np.array([[8.0, 70.0]] * 5 + [[12.5, 55.0]], np.float32)
    x = NORMALIZER(raw).reshape(1, 12)
    out = model.predict(x, verbose=0).reshape(6, 2)
    np.testing.assert_allclose(out, np.tile([12.5, 55.0], (6, 1)), atol=1e-3)


@pytest.mark.parametrize("alpha, filters", [(0.3, 76), (0.75, 192), (0.1, 25)])
@pytest.mark.parametrize("shape, strides, out_hw", [
    ((49, 10, 1), (2, 1), (25, 10)),      # MFCC: stride (2, 1)
    ((56, 56, 1), (2, 2), (28, 28)),      # STFT resized: stride 2
    ((32, 32, 1), (2, 2), (16, 16)),
])
def test_ds_cnn_filters_and_strides(alpha, filters, shape, strides, out_hw):
    model = kws_model.ds_cnn(alpha, shape, strides)
    conv = model.get_layer("conv")
    assert conv.filters == filters and conv.strides == strides and not conv.use_bias
    assert model.get_layer("pw1").filters == filters == model.get_layer("pw2").filters
    assert model.get_layer("conv_relu").output_shape[1:3] == out_hw
    assert model.output_shape == (None, 8)


@pytest.mark.parametrize("layers", [1, 2])
def test_folding_the_persistence_skip_keeps_the_outputs(layers):
    model = forecast_model.mlp(0.2, layers, NORMALIZER)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.trainable and layer.get_weights():
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.3
                               for w in layer.get_weights()])
    folded = forecast_model.fold_persistence(model)
    x = rng.normal(size=(64, 12)).astype(np.float32) * 2
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-4)
    assert "persistence" not in [layer.name for layer in folded.layers]
    assert not any(isinstance(layer, type(model.get_layer("forecast")))
                   for layer in folded.layers)
    assert folded.get_layer("hidden1").units == forecast_model.hidden_units(0.2) + 4
