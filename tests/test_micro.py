"""The microcontroller checks: TensorFlow Lite Micro runs the model, reports the arena
and agrees with the desktop interpreter; unsupported ops are named; the C export
compiles; flash and arena budgets fail when they should."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import forecast_train
from common.errors import UserError
from common.tflite import micro
from conftest import write_jena_csv
from test_cli import assert_bad_input, run_in_process

needs_micro = pytest.mark.skipif(not micro.available(),
                                 reason="tflite-micro not installed (requirements-micro.txt)")


def forecast_run(tmp_path, capsys, *extra):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    out = tmp_path / "out"
    code, stdout, err = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--epochs", "2", "--quiet",
        "--out-dir", str(out), *extra], capsys)
    return code, stdout, err, out


@needs_micro
def test_trained_model_runs_under_tflm_and_the_budgets_judge_it(tmp_path, capsys):
    code, stdout, _, out = forecast_run(tmp_path, capsys, "--max-arena-bytes", "100",
                                        "--max-flash-bytes", "100000", "--export-c")
    report = json.loads((out / "forecast_b.json").read_text())
    metrics = report["metrics"]
    assert 500 < metrics["arena_bytes"] < 10000
    # the same figures under TFLM, close to the desktop interpreter's
    assert metrics["micro_t_mae"] == pytest.approx(metrics["t_mae"], abs=0.01)
    assert report["micro"]["ops"] == ["FULLY_CONNECTED"] * 3
    assert report["micro"]["agreement"]["max_abs_difference"] < 0.01
    verdicts = {v["limit"]: v["ok"] for v in report["budget"]}
    assert verdicts == {**verdicts, "arena_bytes < 100": False,
                        "tflite_bytes < 100000": True}
    assert code == 3 and "tensor arena" in stdout
    header = (out / "forecast_b_model_data.h").read_text()
    assert f"ForecastBArenaSize = {-(-int(metrics['arena_bytes'] * 1.1) // 16) * 16};" \
        in header
    # the header says how to normalize the input, with the model's own statistics
    norm = report["normalization"]
    for column, mean, std in zip(("T (degC)", "rh (%)"), norm["mean"], norm["std"]):
        line = next(line for line in header.splitlines()
                    if line.startswith(f"//   {column}: (x - "))
        numbers = line.split("(x - ")[1].replace(") / (", " ").replace(" + 1e-06)", "")
        assert [np.float32(v) for v in numbers.split()] == [np.float32(mean),
                                                             np.float32(std)], line
    if shutil.which("g++"):
        for name in ("forecast_b_model_data.cc",):
            subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", name, "-o",
                            os.devnull], cwd=out, check=True)
        # the array holds exactly the shipped flatbuffer
        import zlib
        tflite = zlib.decompress((out / "forecast_b.tflite.zlib").read_bytes())
        source = (out / "forecast_b_model_data.cc").read_text()
        body = source.split("{", 1)[1].split("}", 1)[0]
        assert bytes(int(v, 16) for v in body.replace(",", " ").split()) == tflite


@needs_micro
def test_an_op_tflm_lacks_is_named():
    import common
    tf = common.import_tensorflow()

    class TopK(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)],
                     autograph=False)
        def run(self, x):
            return tf.math.top_k(x, 2).values
    module = TopK()
    tflite = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.run.get_concrete_function()], module).convert()
    with pytest.raises(UserError, match="does not support the op TOPK_V2"):
        micro.MicroRunner(tflite)


def test_micro_without_the_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(micro, "available", lambda: False)
    code, _, err, out = forecast_run(tmp_path, capsys, "--micro")
    assert_bad_input(code, err, "pip install -r requirements-micro.txt", out)
    code, _, err, out = forecast_run(tmp_path, capsys, "--max-arena-bytes", "4000")
    assert_bad_input(code, err, "the arena budget needs TensorFlow Lite Micro", out)
    code, _, err, out = forecast_run(tmp_path, capsys, "--export-c", "--no-micro")
    assert_bad_input(code, err, "--export-c needs the TFLM checks", out)


@needs_micro
def test_micro_runner_matches_the_desktop_interpreter_on_an_int8_model():
    from common.kws import model as kws_model
    from common.tflite import optimize
    from common.tflite.runtime import Runner
    model = kws_model.ds_cnn(0.1, (49, 10, 1), (2, 1))
    rng = np.random.default_rng(0)
    calibration = rng.normal(2.0, 1.0, size=(20, 49, 10, 1)).astype(np.float32)
    tflite = optimize.convert(model, "int8", calibration)
    device = micro.MicroRunner(tflite)
    x = calibration[:5]
    desktop, on_device = Runner(tflite).predict(x), device.predict(x)
    scale = Runner(tflite).output["quantization"][0]
    assert np.abs(desktop - on_device).max() <= 2 * scale   # kernels round differently
    assert device.arena_bytes() > 49 * 10


@needs_micro
def test_the_trainer_builds_a_recipes_blocks_and_four_fit_an_esp32_s3_envelope():
    """A recipe's ``blocks`` reach the network the trainer builds: e's recipe with four
    blocks of 76 filters (docs/capacity_run.py) fits 64 KB of flash and 32 KB of
    arena, and no longer e's 32 KB of flash."""
    import dataclasses
    import kws_train
    from common.kws import train
    from common.kws.speech import SpeechData
    from common.tflite import optimize
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 20.0, size=(16, 49, 10, 1)).astype(np.float32)
    y = np.arange(16) % 10
    data = SpeechData(labels=[str(i) for i in range(10)], train=(x, y), val=(x, y),
                      test=(x, y))
    e = kws_train.RECIPES["e"]
    wider = dataclasses.replace(e, alpha=0.3, blocks=4, epochs=1, spec_augment=None)
    model, _ = train.fit_ds_cnn(wider, data, y, seed=0, verbose=False)
    assert [layer.name for layer in model.layers if layer.name.startswith("dw")] == [
        "dw1", "dw2", "dw3", "dw4"]
    tflite = optimize.convert(model, "int8", x)
    assert 32768 < len(tflite) <= 65536
    assert micro.MicroRunner(tflite).arena_bytes() <= 32768
