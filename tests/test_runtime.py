"""The interpreter runner and the latency checker: quantized inputs and outputs use
the model's own scale and zero point, and the latency spans are exactly the
course's definitions."""
import time

import numpy as np
import pytest
import tf_keras as keras

from common.tflite import optimize, runtime
from common.tflite.runtime import Runner


def offset_regressor():
    """A fixed small regressor whose inputs and outputs both sit far from zero, so
    the int8 zero points of its input and output are far from 0 too."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.layers[1].set_weights([rng.normal(0, 0.5, (6, 8)).astype(np.float32),
                                 np.full(8, 0.5, np.float32)])
    model.layers[2].set_weights([rng.normal(0, 0.5, (8, 3)).astype(np.float32),
                                 np.array([8.0, 10.0, 12.0], np.float32)])
    calibration = rng.uniform(1.0, 4.0, (200, 6)).astype(np.float32)  # mean 2.5
    return model, calibration


@pytest.fixture(scope="module")
def int8_regressor():
    model, calibration = offset_regressor()
    return model, calibration, optimize.convert(model, "int8", calibration)


def test_int8_input_quantization_uses_the_zero_point(int8_regressor):
    _, calibration, tflite = int8_regressor
    runner = Runner(tflite)
    scale, zero_point = runner.input["quantization"]
    assert runner.input["dtype"] == np.int8
    assert abs(zero_point) > 50  # the fixture must exercise the zero point
    x = calibration[:20]
    q = np.stack([runner.quantize_input(sample) for sample in x])
    assert q.dtype == np.int8
    # dequantized back with the tensor's parameters, every value is within half a step
    np.testing.assert_allclose((q.astype(np.float32) - zero_point) * scale,
                               x.reshape(q.shape), atol=scale / 2 + 1e-6)


def test_int8_outputs_match_keras(int8_regressor):
    model, calibration, tflite = int8_regressor
    runner = Runner(tflite)
    scale, zero_point = runner.output["quantization"]
    assert abs(zero_point) > 50  # outputs 5..15: the dequantization needs the zero point
    x = np.random.default_rng(1).uniform(1.0, 4.0, (50, 6)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    got = runner.predict(x)
    # a few output steps of error at most; a lost zero point costs about 100 steps
    np.testing.assert_allclose(got, expected, atol=4 * scale)


# --- latency: a fake clock that each timed piece advances by its own power of two

MAKE_INPUT, PREPROCESS, SET_INPUT, INVOKE, READ_OUTPUT = 1, 2, 4, 8, 16
UNIT_S = 2.0 ** -10  # exact in binary floating point


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def advance(self, units):
        self.now += units * UNIT_S

    def __call__(self):
        return self.now


class ClockedInterpreter:
    """Forwards to the real interpreter; setting a tensor, invoking and reading a
    tensor each advance the clock by their own amount."""

    def __init__(self, interpreter, clock):
        self._interpreter, self._clock = interpreter, clock

    def set_tensor(self, *args):
        self._clock.advance(SET_INPUT)
        return self._interpreter.set_tensor(*args)

    def invoke(self):
        self._clock.advance(INVOKE)
        return self._interpreter.invoke()

    def get_tensor(self, *args):
        self._clock.advance(READ_OUTPUT)
        return self._interpreter.get_tensor(*args)

    def __getattr__(self, name):
        return getattr(self._interpreter, name)


def ms(units):
    return 1000.0 * units * UNIT_S


def test_latency_times_exactly_the_defined_spans(int8_regressor, monkeypatch):
    _, calibration, tflite = int8_regressor
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    monkeypatch.setattr(runtime, "perf_counter", clock, raising=False)

    class ClockedRunner(Runner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.interpreter = ClockedInterpreter(self.interpreter, clock)

    monkeypatch.setattr(runtime, "Runner", ClockedRunner)
    calls = {"make_input": 0, "preprocess": 0}

    def make_input():
        calls["make_input"] += 1
        clock.advance(MAKE_INPUT)
        return calibration[0] * 2

    def preprocess(raw):
        calls["preprocess"] += 1
        clock.advance(PREPROCESS)
        return raw / 2

    result = runtime.measure_latency(tflite, make_input, preprocess, runs=5, warmup=2,
                                     num_threads=1, pause_s=0.0)
    assert calls == {"make_input": 7, "preprocess": 7}
    total = ms(PREPROCESS + SET_INPUT + INVOKE + READ_OUTPUT)  # not MAKE_INPUT
    inference = ms(INVOKE + READ_OUTPUT)
    for key in ("mean_ms", "median_ms", "p90_ms"):
        assert result["total"][key] == pytest.approx(total, abs=1e-4)
        assert result["inference"][key] == pytest.approx(inference, abs=1e-4)
    assert result["total"]["runs"] == result["inference"]["runs"] == 5
