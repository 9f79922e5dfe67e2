"""Verdicts that cannot be fooled: --evaluate judges the file it is given with the
model's own label order, a run's model and JSON are published as a unit, signals
stop a run with one line, and the committed models are what their JSONs say."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tf_keras as keras

import forecast_train
import kws_train
from common import artifacts
from common.cli import run_main
from common.errors import Terminated, UserError, raise_pending_stop, stop_handlers
from common.kws.features import METADATA as FEATURES_METADATA
from common.tflite import optimize, tflite_file, training
from conftest import (ROOT, TF_TURNS_A_SIGNAL_INTO, signal_lost_in_tensorflow,
                      write_jena_csv)
from test_cli import FAST_KWS, assert_bad_input, kws_args, run_in_process, run_script

MODELS = os.path.join(ROOT, "models")


def test_evaluate_judges_the_bytes_of_the_file_given(tmp_path, capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    out = tmp_path / "out"
    code, _, _ = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--epochs", "2", "--quiet",
        "--out-dir", str(out)], capsys)
    shipped = out / "forecast_b.tflite.zlib"
    tflite = zlib.decompress(shipped.read_bytes())
    stored = tmp_path / "stored.tflite.zlib"      # level 0: valid zlib, not compressed
    stored.write_bytes(zlib.compress(tflite, 0))
    assert os.path.getsize(stored) > 1700 > os.path.getsize(shipped)
    code, out_text, _ = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--evaluate", str(stored)], capsys)
    assert code == 3 and f"zlib_bytes < 1700  {os.path.getsize(stored)}" in out_text
    raw = tmp_path / "raw.tflite"                 # a raw file: judged on what would ship
    raw.write_bytes(tflite)
    _, out_text, _ = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--evaluate", str(raw)], capsys)
    assert f"zlib_bytes < 1700  {os.path.getsize(shipped)}" in out_text
    assert f"raw .tflite ({len(tflite)} B)" in out_text


def test_forecast_evaluate_normalizes_with_the_models_own_statistics(tmp_path, capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    out = tmp_path / "out"
    run_in_process(forecast_train.main, ["--version", "b", "--csv", str(csv), "--epochs",
                                         "2", "--quiet", "--out-dir", str(out)], capsys)
    report = json.loads((out / "forecast_b.json").read_text())
    # the same test rows, but training rows 10 degC warmer: other CSV statistics
    lines = csv.read_text().splitlines()
    for i in range(1, int(0.7 * 600)):
        cells = lines[i].split(",")
        cells[2] = f"{float(cells[2]) + 10:.2f}"
        lines[i] = ",".join(cells)
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("\n".join(lines) + "\n")
    _, out_text, _ = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(shifted), "--evaluate",
        str(out / "forecast_b.tflite.zlib")], capsys)
    assert f"t_mae < 0.6        {report['metrics']['t_mae']:g}" in out_text


def test_device_budgets_from_the_command_line_only_tighten():
    from common import cli, pipeline
    args = cli.base_parser("", kws_train.RECIPES).parse_args(
        ["--version", "d", "--max-flash-bytes", "999999", "--max-arena-bytes", "1000"])
    recipe = pipeline.resolve_recipe(kws_train.RECIPES, args)
    assert (recipe.max_flash_bytes, recipe.max_arena_bytes) == (32768, 1000)


def test_damaged_model_and_list_files_are_one_line_errors(tmp_path, speech_dir, capsys):
    # b's own model: evaluate_kws runs version b, which refuses another front end's
    tflite = zlib.decompress(open(os.path.join(MODELS, "kws_b.tflite.zlib"), "rb").read())
    half = tmp_path / "half.tflite"
    half.write_bytes(tflite[:len(tflite) // 2])
    code, _, err = evaluate_kws(half, speech_dir, capsys)
    assert_bad_input(code, err, "damaged")
    (speech_dir / "kws_test_split.txt").write_bytes(b"\xff\xfe\x00bad")
    code, _, err = evaluate_kws(os.path.join(MODELS, "kws_b.tflite.zlib"), speech_dir,
                                capsys)
    assert_bad_input(code, err, "not UTF-8")


def test_splits_must_not_share_clips(tmp_path, speech_dir, capsys):
    test_lines = (speech_dir / "kws_test_split.txt").read_text().split()
    rewrite_list(speech_dir, "train", lambda lines: lines + test_lines[:1])
    out = tmp_path / "out"
    code, _, err = run_in_process(kws_train.main, [
        "--version", "b", *kws_args(speech_dir, out, *FAST_KWS)], capsys)
    assert_bad_input(code, err, "listed in both", out)


def rewrite_list(split_dir, split, edit):
    path = split_dir / f"kws_{split}_split.txt"
    path.write_text("\n".join(edit(path.read_text().split())) + "\n")


@pytest.fixture
def trained_kws(tmp_path, speech_dir, capsys):
    out = tmp_path / "out"
    run_in_process(kws_train.main, ["--version", "b", *kws_args(speech_dir, out, *FAST_KWS)],
                   capsys)
    return out / "kws_b.tflite.zlib", json.loads((out / "kws_b.json").read_text())


def evaluate_kws(model, speech_dir, capsys):
    return run_in_process(kws_train.main, [
        "--version", "b", "--evaluate", str(model), "--data-dir", str(speech_dir),
        "--split-dir", str(speech_dir), "--no-download", "--latency-runs", "1",
        "--latency-pause", "0", "--listening-minutes", "0"], capsys)


def test_kws_evaluate_takes_the_label_order_from_the_model(trained_kws, speech_dir,
                                                           capsys):
    model, report = trained_kws
    assert tflite_file.read_labels(zlib.decompress(model.read_bytes()), "m") \
        == report["labels"]
    # the training list plays no part: a stray label there changes nothing
    stray = speech_dir / "mini_speech_commands" / "yse"
    shutil.copytree(speech_dir / "mini_speech_commands" / "yes", stray)
    rewrite_list(speech_dir, "train", lambda lines: lines + [
        f"./data/mini_speech_commands/yse/{name}" for name in os.listdir(stray)])
    code, out, _ = evaluate_kws(model, speech_dir, capsys)
    assert f"{report['metrics']['correct']}/8" in out
    # a test list that lacks a word, or has one the model does not know
    rewrite_list(speech_dir, "test", lambda lines: [l for l in lines if "/yes/" not in l])
    code, _, err = evaluate_kws(model, speech_dir, capsys)
    assert_bad_input(code, err, "no clip of yes")
    rewrite_list(speech_dir, "test", lambda lines: lines + [
        f"./data/mini_speech_commands/yse/{os.listdir(stray)[0]}",
        f"./data/mini_speech_commands/yes/{os.listdir(stray)[0]}"])
    code, _, err = evaluate_kws(model, speech_dir, capsys)
    assert_bad_input(code, err, "label yse that the model lacks")


def test_kws_evaluate_needs_labels_matching_the_outputs(trained_kws, speech_dir, capsys,
                                                        tmp_path):
    model, report = trained_kws
    tflite = zlib.decompress(model.read_bytes())
    unlabelled = tmp_path / "unlabelled.tflite"
    unlabelled.write_bytes(optimize.slim(tflite))  # slim drops the metadata
    code, _, err = evaluate_kws(unlabelled, speech_dir, capsys)
    assert_bad_input(code, err, "records no labels")
    seven = tmp_path / "seven.tflite"
    seven.write_bytes(tflite_file.with_labels(tflite, report["labels"][:7]))
    rewrite_list(speech_dir, "test", lambda lines: [l for l in lines if "/yes/" not in l])
    code, _, err = evaluate_kws(seven, speech_dir, capsys)
    assert_bad_input(code, err, "8 outputs but records 7 labels")


def test_kws_evaluate_needs_the_features_the_model_was_trained_on(
        trained_kws, speech_dir, capsys, tmp_path, monkeypatch):
    model, report = trained_kws
    tflite = zlib.decompress(model.read_bytes())
    assert json.loads(tflite_file.read_metadata(tflite, "features")) \
        == report["recipe"]["features"]
    # the same input shape from other features (as a 40x40 log-STFT cut at 4 kHz or
    # not would give): here b's MFCC with another mel range
    base = kws_train.RECIPES["b"]
    monkeypatch.setitem(kws_train.RECIPES, "b", dataclasses.replace(
        base, features=dataclasses.replace(base.features, upper_hz=3000.0)))
    code, _, err = evaluate_kws(model, speech_dir, capsys)
    assert_bad_input(code, err, "trained on other features than version b computes: "
                                "upper_hz 4000.0 (version b: 3000.0)")
    monkeypatch.setitem(kws_train.RECIPES, "b", base)
    bare = tmp_path / "bare.tflite"  # labels, but no features: not this pipeline's
    bare.write_bytes(tflite_file.with_labels(optimize.slim(tflite), report["labels"]))
    code, _, err = evaluate_kws(bare, speech_dir, capsys)
    assert_bad_input(code, err, "records no features")
    for text in ("{not json", "[1, 2]", '{"kind": "mfcc", "hop": 3}', '{"kind": "wav"}'):
        damaged = tmp_path / "damaged.tflite"
        damaged.write_bytes(tflite_file.with_metadata(tflite, "features", text))
        code, _, err = evaluate_kws(damaged, speech_dir, capsys)
        assert_bad_input(code, err, "damaged 'features' metadata")
    # a record from before a field existed (and 4000 written as an integer) is fine
    older = {k: v for k, v in report["recipe"]["features"].items() if k != "max_hz"}
    older["upper_hz"] = 4000
    model_before = tmp_path / "before.tflite"
    model_before.write_bytes(tflite_file.with_metadata(tflite, "features",
                                                       json.dumps(older)))
    code, out, _ = evaluate_kws(model_before, speech_dir, capsys)
    assert code in (0, 3) and f"{report['metrics']['correct']}/8" in out


@pytest.mark.parametrize("case", ["misspelt", "missing"])
def test_training_needs_one_label_set_in_every_split(tmp_path, speech_dir, capsys, case):
    folder = speech_dir / "mini_speech_commands"
    if case == "misspelt":
        shutil.copytree(folder / "yes", folder / "yse")
        rewrite_list(speech_dir, "train", lambda lines: [
            l.replace("/yes/", "/yse/") if l.endswith("clip0_nohash_0.wav") else l
            for l in lines])
        fragment = "kws_val_split.txt has no clip of yse"
    else:
        rewrite_list(speech_dir, "train", lambda lines: [l for l in lines if "/up/" not in l])
        fragment = "kws_val_split.txt has label up that the training list"
    out = tmp_path / "out"
    code, _, err = run_in_process(kws_train.main, [
        "--version", "b", *kws_args(speech_dir, out, *FAST_KWS)], capsys)
    assert_bad_input(code, err, fragment, out)


def test_a_failed_write_leaves_the_previous_result(tmp_path, capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    out = tmp_path / "out"
    out.mkdir()
    (out / "forecast_b.tflite.zlib").write_bytes(b"previous model")
    (out / "forecast_b.json").mkdir()  # a folder where the JSON must go
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--epochs", "1", "--quiet",
        "--out-dir", str(out)], capsys)
    assert_bad_input(code, err, "nothing was written")
    assert (out / "forecast_b.tflite.zlib").read_bytes() == b"previous model"
    assert sorted(os.listdir(out)) == ["forecast_b.json", "forecast_b.tflite.zlib"]


def test_publish_rolls_back_when_interrupted_halfway(tmp_path, monkeypatch):
    (tmp_path / "m.bin").write_bytes(b"old model")
    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the model is in place; the JSON's move fails
            raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(KeyboardInterrupt):
        artifacts.publish(str(tmp_path), {"m.bin": b"new model", "m.json": b"{}"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "m.bin").read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]
    with pytest.raises(UserError, match="nothing was written"):
        artifacts.publish(str(tmp_path / "m.bin" / "sub"), {"x": b"1"})


def test_output_folder_is_created_only_when_there_is_something_to_write(tmp_path):
    target = tmp_path / "a" / "b"
    artifacts.check_output_dir(str(target))
    assert not os.path.exists(tmp_path / "a")
    artifacts.publish(str(target), {"x": b"1"})
    assert (target / "x").read_bytes() == b"1"


def test_sigterm_stops_a_run_with_one_line(tmp_path):
    csv = write_jena_csv(tmp_path / "jena.csv", 3000)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "forecast_train.py"), "--version", "b",
         "--csv", str(csv), "--epochs", "500", "--out-dir", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "Epoch" in line or "/500" in line:  # training has started
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]  # the stderr says why when it fails
    assert err.strip().splitlines() == ["error: terminated; nothing was written"]
    assert not out.exists()


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"),
                                               (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("tf_turns_it_into", TF_TURNS_A_SIGNAL_INTO)
@pytest.mark.parametrize("then", ["publishes", "returns", "starts a search"])
def test_a_signal_tensorflow_loses_still_stops_the_run(tmp_path, capsys, signum, code,
                                                       word, tf_turns_it_into, then):
    """What CI saw once: SIGTERM landed inside TensorFlow's C layer, its exception was
    lost there, and the run trained on to exit 0."""
    out = tmp_path / "out"

    def main(argv):
        signal_lost_in_tensorflow(signum, tf_turns_it_into)
        if then == "publishes":
            artifacts.publish(str(out), {"x": b"1"})
        if then == "starts a search":  # its own handlers must not forget the stop
            from common import search
            with search.Interrupt().installed():
                return 0
        return 0
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    exit_code, _, err = run_in_process(main, [], capsys)
    assert (exit_code, err) == (code, f"error: {word}; nothing was written\n")
    assert not out.exists()
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    raise_pending_stop()  # reported, so forgotten: what runs next is not stopped


def test_a_signal_ignored_when_the_run_starts_stays_ignored(capsys):
    """As in a script's background job (``cmd &``), which ignores Ctrl-C: in a run,
    and in a search inside it."""
    from common import search

    def main(argv):
        with search.Interrupt().installed():
            os.kill(os.getpid(), signal.SIGINT)
        return 0
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert run_in_process(main, [], capsys) == (0, "", "")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("tf_turns_it_into", TF_TURNS_A_SIGNAL_INTO)
def test_a_signal_tensorflow_loses_still_stops_the_detector(monkeypatch, capsys,
                                                             tf_turns_it_into):
    import kws_detect

    def main(argv):
        signal_lost_in_tensorflow(signal.SIGTERM, tf_turns_it_into)
        return 0
    monkeypatch.setattr(kws_detect, "main", main)
    with pytest.raises(SystemExit) as exit_info:
        kws_detect.run([])
    assert exit_info.value.code == 143
    assert capsys.readouterr().err == "error: terminated\n"
    raise_pending_stop()  # reported, so forgotten


def test_an_error_without_a_signal_is_not_taken_for_one(capsys):
    def main(argv):
        raise SystemError("a real failure")
    with pytest.raises(SystemError, match="a real failure"):
        run_main(main, [])


@pytest.mark.parametrize("handlers", ["a run's", "a search's"])
def test_training_stops_after_a_lost_signal(handlers):
    from common import search
    model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(1)])
    x = np.zeros((64, 2), np.float32)
    with (stop_handlers() if handlers == "a run's" else search.Interrupt().installed()):
        signal_lost_in_tensorflow(signal.SIGTERM, "nothing (swallowed)")
        with pytest.raises(Terminated):
            training.fit(model, (x, x[:, :1]), (x, x[:, :1]),
                         training.TrainingSettings(epochs=50, batch_size=8,
                                                   learning_rate=0.01),
                         loss="mse", verbose=0)


def test_a_signal_during_training_is_raised_at_the_batch_end(monkeypatch):
    """Not where it lands: raised inside TensorFlow's C layer, it made TensorFlow print
    a traceback before the run's one line (CI, SIGTERM during forecast b's fit)."""
    went_on = []

    class SignalInsideABatch(training.StopWhenAsked):
        def on_train_batch_begin(self, batch, logs=None):
            os.kill(os.getpid(), signal.SIGTERM)
            went_on.append(batch)  # the signal did not raise here

    monkeypatch.setattr(training, "StopWhenAsked", SignalInsideABatch)
    model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(1)])
    x = np.zeros((64, 2), np.float32)
    with stop_handlers():
        with pytest.raises(Terminated):
            training.fit(model, (x, x[:, :1]), (x, x[:, :1]),
                         training.TrainingSettings(epochs=5, batch_size=8,
                                                   learning_rate=0.01),
                         loss="mse", verbose=0)
    assert went_on == [0]  # then stopped at the end of that batch


# --- the committed models are what their JSONs say ---------------------------------

SHIPPED = sorted(name[:-len(".json")] for name in os.listdir(MODELS)
                 if name.endswith(".json"))
SCRIPTS = {"forecast": forecast_train, "kws": kws_train}


def assert_recorded_as(recorded, recipe, where="recipe"):
    """``recorded`` (a JSON recipe) is ``recipe``: the same value for every field it
    records, nested dataclasses compared field by field; a field added since (at any
    depth) must still be at its default, so it did not change the shipped recipe."""
    names = {f.name for f in dataclasses.fields(recipe)}
    assert set(recorded) <= names, f"{where}: {set(recorded) - names} no longer exist"
    for field in dataclasses.fields(recipe):
        value = getattr(recipe, field.name)
        if field.name not in recorded:
            assert value == field.default, f"{where}.{field.name} added, not at default"
        elif dataclasses.is_dataclass(value) and isinstance(recorded[field.name], dict):
            assert_recorded_as(recorded[field.name], value, f"{where}.{field.name}")
        else:
            assert recorded[field.name] == json.loads(json.dumps(
                dataclasses.asdict(recipe)[field.name])), f"{where}.{field.name}"


@pytest.mark.parametrize("stem", SHIPPED)
def test_committed_model_matches_its_json(stem):
    from common.tflite.runtime import Runner
    report = json.loads(open(os.path.join(MODELS, f"{stem}.json")).read())
    path = os.path.join(MODELS, f"{stem}.tflite.zlib")
    tflite = zlib.decompress(open(path, "rb").read())
    metrics = report["metrics"]
    assert os.path.getsize(path) == metrics["zlib_bytes"]
    assert len(tflite) == metrics["tflite_bytes"]
    # one result: the JSON names the very bytes shipped beside it (issue 19)
    assert report.get("model_sha256") == artifacts.sha256_file(path), \
        f"{stem}.json does not record this .tflite.zlib's sha256"
    recipe = SCRIPTS[report["task"]].RECIPES[report["version"]]
    # the shipped file was made by the recipe the script ships today
    assert_recorded_as(report["recipe"], recipe)
    assert optimize.weight_types(tflite) == report["weight_types"]
    runner = Runner(tflite)
    io_type = {"float": np.float32, "int8": np.int8}[recipe.quantization]
    assert runner.input["dtype"] == io_type and runner.output["dtype"] == io_type
    if report["task"] == "kws":
        assert tuple(runner.input_shape) == (1, *recipe.features.shape)
        assert tflite_file.read_labels(tflite, path) == report["labels"]
        recorded = tflite_file.read_metadata(tflite, FEATURES_METADATA)
        assert recorded is not None, f"{stem} records no features"
        assert json.loads(recorded) == report["recipe"]["features"]
        assert tuple(runner.output["shape"]) == (1, len(report["labels"]))
        detector = tflite_file.read_metadata(tflite, "detector")  # a listening version's
        assert (detector is not None) == (recipe.negatives is not None)
        if detector is not None:  # the settings its listening report measured
            assert json.loads(detector) == report["listening"]["settings"]
    else:
        assert tuple(runner.input_shape) == (1, 12)
        assert tuple(runner.output["shape"]) == (1, 12)
    assert report["budget_holds"] and all(v["ok"] for v in report["budget"])
