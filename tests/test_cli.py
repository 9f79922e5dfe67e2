"""Both scripts end to end on synthetic data, and every bad-input case: one line on
stderr, exit code 2, no traceback, nothing left in the output folder."""
import json
import os
import subprocess
import sys

import pytest

import forecast_train
import kws_train
from common.cli import EXIT_BAD_INPUT, run_main
from conftest import ROOT, tone, write_jena_csv, write_wav

FAST_KWS = ["--epochs", "1", "--alpha", "0.05", "--latency-runs", "3",
            "--latency-pause", "0", "--listening-minutes", "0.05", "--quiet"]


def run_script(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def run_in_process(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_bad_input(code, err, fragment, out_dir=None):
    """Exit 2, exactly one ``error:`` line on stderr, and no output folder made."""
    assert code == EXIT_BAD_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    if out_dir is not None:
        assert not os.path.exists(out_dir)


def test_forecast_end_to_end_then_evaluate(tmp_path):
    csv = write_jena_csv(tmp_path / "jena.csv", 900)
    out = tmp_path / "out"
    result = run_script("forecast_train.py", "--version", "b", "--csv", str(csv),
                        "--epochs", "3", "--out-dir", str(out), "--quiet", "--seed", "1")
    assert result.returncode in (0, 3), result.stderr
    assert "T MAE" in result.stdout and "budget" in result.stdout
    assert sorted(os.listdir(out)) == ["forecast_b.json", "forecast_b.tflite.zlib"]
    report = json.loads((out / "forecast_b.json").read_text())
    assert report["metrics"]["zlib_bytes"] == os.path.getsize(out / "forecast_b.tflite.zlib")
    assert report["recipe"]["epochs"] == 3 and report["seed"] == 1
    assert report["data"]["rows"] == 900 and len(report["data"]["sha256"]) == 64
    assert {"t_mae", "rh_mae"} <= set(report["float_unpruned"])
    assert [v["limit"] for v in report["budget"]] == [
        "t_mae < 0.6", "rh_mae < 1.9", "zlib_bytes < 1700"]
    assert report["budget_holds"] == (result.returncode == 0)
    again = run_script("forecast_train.py", "--version", "b", "--csv", str(csv),
                       "--evaluate", str(out / "forecast_b.tflite.zlib"))
    assert again.returncode == result.returncode, again.stderr
    assert f"{report['metrics']['t_mae']:.3f}" in again.stdout


def test_forecast_budget_miss_exits_3(tmp_path, capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 600)
    # one epoch of a noisy synthetic series cannot reach T MAE < 0.6 degC
    code, out, _ = run_in_process(forecast_train.main, [
        "--version", "b", "--csv", str(csv), "--epochs", "1", "--quiet",
        "--out-dir", str(tmp_path / "o")], capsys)
    report = json.loads((tmp_path / "o" / "forecast_b.json").read_text())
    assert code == (0 if report["budget_holds"] else 3)
    assert ("MISSED" in out) == (code == 3)


def test_forecast_help_lists_every_option():
    result = run_script("forecast_train.py", "--help")
    assert result.returncode == 0
    for option in ("--version", "--csv", "--data-dir", "--out-dir", "--seed", "--epochs",
                   "--alpha", "--sparsity", "--evaluate"):
        assert option in result.stdout


def test_unknown_version_is_a_one_line_error():
    result = run_script("forecast_train.py", "--version", "z")
    assert_bad_input(result.returncode, result.stderr, "invalid choice")


@pytest.mark.parametrize("args, fragment", [
    (["--version", "a", "--csv", "/no/such.csv"], "does not exist"),
    (["--version", "a", "--epochs", "0"], "--epochs"),
    (["--version", "a", "--sparsity", "x"], "not a finite number"),
    (["--version", "a", "--alpha", "nan"], "not a finite number"),
    (["--version", "a", "--seed", str(2 ** 32)], "--seed"),
    (["--version", "a", "--seeds", "1,,2"], "--seeds"),
    (["--version", "a", "--out-dir", ""], "empty folder name"),
    (["--version", "a", "--evaluate", "m.tflite", "--alpha", "0.2"], "--alpha would be"),
    (["--version", "a", "--export-max-bytes", "900"], "goes with --export-best"),
    (["--version", "a", "--export-trial", "3", "--out-dir", "/tmp/no-study-here"],
     "no study to export from"),
    (["--version", "a", "--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_stderr_line_before_tensorflow_loads(args, fragment):
    # TensorFlow's native start-up lines would come first if it loaded for these
    result = run_script("forecast_train.py", *args)
    assert_bad_input(result.returncode, result.stderr, fragment)
    check = subprocess.run(
        [sys.executable, "-c", "import sys, forecast_train\n"
         "from common.errors import UserError\n"
         f"try:\n    forecast_train.main({args!r})\nexcept UserError:\n    pass\n"
         "print('tensorflow' in sys.modules)"], capture_output=True, text=True, cwd=ROOT)
    assert check.stdout.strip() == "False", check.stderr


def test_model_errors_after_tensorflow_loads_are_still_one_line(tmp_path):
    import zlib
    from common.tflite import tflite_file
    csv = write_jena_csv(tmp_path / "jena.csv", 300)
    # a TFLite header on garbage passes the file check, not the flatbuffer parser
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 200)
    result = run_script("forecast_train.py", "--version", "a", "--csv", str(csv),
                        "--evaluate", str(fake))
    assert_bad_input(result.returncode, result.stderr, "records no normalization")
    # a real model the interpreter builds (its XNNPACK line hidden), of the wrong shape
    kws = zlib.decompress(open(os.path.join(ROOT, "models", "kws_d.tflite.zlib"),
                               "rb").read())
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(tflite_file.with_metadata(kws, "normalization",
                                                '{"mean":[0,0],"std":[1,1]}'))
    result = run_script("forecast_train.py", "--version", "a", "--csv", str(csv),
                        "--evaluate", str(wrong))
    assert_bad_input(result.returncode, result.stderr, "the model takes input")


@pytest.mark.parametrize("case", ["missing", "no_rh", "nan", "text", "few_rows"])
def test_forecast_bad_csv(tmp_path, capsys, case):
    path = tmp_path / "x.csv"
    if case == "no_rh":
        write_jena_csv(path, 300, columns=("T (degC)", "p2 (mbar)"))
    elif case in ("nan", "text"):
        write_jena_csv(path, 300)
        lines = path.read_text().splitlines()
        lines[50] = lines[50].rsplit(",", 1)[0] + ("," if case == "nan" else ",humid")
        path.write_text("\n".join(lines))
    elif case == "few_rows":
        write_jena_csv(path, 100)
    out = tmp_path / "out"
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "a", "--csv", str(path), "--out-dir", str(out)], capsys)
    fragment = {"missing": "does not exist", "no_rh": "no column", "nan": "non-numeric",
                "text": "non-numeric", "few_rows": "too few"}[case]
    assert_bad_input(code, err, fragment, out)


def test_forecast_unwritable_output_and_corrupt_model(tmp_path, capsys):
    csv = write_jena_csv(tmp_path / "jena.csv", 300)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "a", "--csv", str(csv), "--out-dir", str(blocker / "sub")], capsys)
    assert_bad_input(code, err, "not writable")
    corrupt = tmp_path / "m.tflite.zlib"
    corrupt.write_bytes(b"\x78\x9c garbage")
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "a", "--csv", str(csv), "--evaluate", str(corrupt)], capsys)
    assert_bad_input(code, err, "not a valid zlib")


def test_forecast_bad_overrides(tmp_path, capsys):
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "a", "--csv", "x.csv", "--sparsity", "1.5"], capsys)
    assert_bad_input(code, err, "--sparsity")


def test_forecast_missing_default_data_without_download(tmp_path, capsys):
    code, _, err = run_in_process(forecast_train.main, [
        "--version", "a", "--data-dir", str(tmp_path), "--no-download",
        "--out-dir", str(tmp_path / "o")], capsys)
    assert_bad_input(code, err, "--no-download", tmp_path / "o")


def kws_args(speech_dir, out, *extra):
    return ["--data-dir", str(speech_dir), "--split-dir", str(speech_dir), "--out-dir",
            str(out), "--no-download", *extra]


def test_kws_end_to_end_then_evaluate(tmp_path, speech_dir):
    out = tmp_path / "out"
    result = run_script("kws_train.py", "--version", "b",
                        *kws_args(speech_dir, out, *FAST_KWS))
    assert result.returncode in (0, 3), result.stderr
    assert "/8" in result.stdout and "confusion" in result.stdout
    assert "inference" in result.stdout and "total" in result.stdout
    assert sorted(os.listdir(out)) == ["kws_b.json", "kws_b.tflite.zlib"]
    report = json.loads((out / "kws_b.json").read_text())
    assert report["labels"] == sorted(report["labels"]) and len(report["labels"]) == 8
    assert report["metrics"]["clips"] == 8
    assert set(report["weight_types"]) == {"int8"}
    assert report["latency"]["1_thread"]["total"]["runs"] == 3
    assert report["recipe"]["features"]["kind"] == "mfcc"
    again = run_script("kws_train.py", "--version", "b", "--evaluate",
                       str(out / "kws_b.tflite.zlib"), *kws_args(speech_dir, out)[:4],
                       "--latency-runs", "2", "--latency-pause", "0",
                       "--listening-minutes", "0.05")
    assert again.returncode == result.returncode, again.stderr
    assert f"{report['metrics']['correct']}/8" in again.stdout


@pytest.mark.parametrize("case", ["no_dataset", "no_split", "listed_missing",
                                  "truncated", "stereo", "rate", "not_wav"])
def test_kws_bad_input(tmp_path, speech_dir, capsys, case):
    clip = speech_dir / "mini_speech_commands" / "go" / "clip4_nohash_0.wav"  # a test clip
    data_dir, split_dir = speech_dir, speech_dir
    if case == "no_dataset":
        data_dir = tmp_path / "empty"
        data_dir.mkdir()
    elif case == "no_split":
        split_dir = tmp_path
    elif case == "listed_missing":
        clip.unlink()
    elif case == "truncated":
        clip.write_bytes(clip.read_bytes()[:1000])
    elif case == "stereo":
        write_wav(str(clip), tone(440, 0.5) * 2, channels=2)
    elif case == "rate":
        write_wav(str(clip), tone(440, 0.5, rate=8000), rate=8000)
    elif case == "not_wav":
        clip.write_text("RIFF? no.")
    out = tmp_path / "out"
    code, _, err = run_in_process(kws_train.main, [
        "--version", "c", "--data-dir", str(data_dir), "--split-dir", str(split_dir),
        "--out-dir", str(out), "--no-download", *FAST_KWS], capsys)
    fragment = {"no_dataset": "--no-download", "no_split": "split list",
                "listed_missing": "does not exist", "truncated": "truncated",
                "stereo": "2 channels", "rate": "8000 Hz",
                "not_wav": "not a readable WAV"}[case]
    assert_bad_input(code, err, fragment, out)


def test_kws_unwritable_output_and_corrupt_model(tmp_path, speech_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_in_process(kws_train.main, [
        "--version", "a", *kws_args(speech_dir, blocker / "sub", *FAST_KWS)], capsys)
    assert_bad_input(code, err, "not writable")
    corrupt = tmp_path / "m.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    code, _, err = run_in_process(kws_train.main, [
        "--version", "a", "--evaluate", str(corrupt),
        *kws_args(speech_dir, tmp_path / "o")], capsys)
    assert_bad_input(code, err, "not a TFLite model")


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_redraws_one_line_on_a_terminal_and_prints_plain_lines_elsewhere(
        monkeypatch, capsys, terminal):
    """Redirected to a file, the ``\\r`` updates were kept on one line of the log."""
    from common import progress
    monkeypatch.setattr(progress, "on_terminal", lambda: terminal)
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    line = progress.Line("features", 3)
    for _ in range(3):
        line.advance()
    line.finish("features done")
    out = capsys.readouterr().out
    if terminal:
        assert out.count("\r") >= 3 and out.endswith("\rfeatures done\n")
    else:
        assert "\r" not in out
        assert out.splitlines() == ["features: 1/3 (33%)", "features: 2/3 (67%)",
                                    "features: 3/3 (100%)", "features done"]
    monkeypatch.setattr(progress, "LOG_INTERVAL", 3600.0)  # a log: lines seldom
    line = progress.Line("later", 1000)
    for _ in range(1000):
        line.advance()
    assert capsys.readouterr().out.count("later:") == (1000 if terminal else 1)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "lost"])
def test_a_stop_while_tensorflow_loads_does_not_replay_its_start_up_lines(capfd, stop):
    """Ctrl-C or SIGTERM during TensorFlow's import printed its start-up lines (hidden
    in quiet mode) before ``error: interrupted``; a real failure still shows them."""
    import common
    from common.errors import Terminated, forget_stop, remember_stop
    common.set_quiet(True)
    try:
        for raised, replayed in [(stop, False), (ValueError, True)]:
            if raised == "lost":  # the stop TensorFlow's C layer made a SystemError of
                remember_stop(Terminated())
                raised = SystemError
            with pytest.raises(raised):
                with common.native_stderr_hidden():
                    os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
                    raise raised()
            forget_stop()
            assert ("cuda drivers" in capfd.readouterr().err) == replayed, raised
    finally:
        common.set_quiet(False)
        forget_stop()
