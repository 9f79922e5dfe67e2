"""Publishing (issue 19): the output folder is checked before training, a result's
files move into place as a unit (locked, signal-safe, cleaned up after runs killed
outright), a model that meets its budget is not silently replaced by one that
misses it, and output nobody can read changes neither the files nor the exit code."""
import errno
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from common import artifacts, pipeline
from common.cli import run_main
from common.errors import UserError
from conftest import ROOT
from test_seeds import ConstantTask as SeedsConstantTask

TESTS = os.path.dirname(os.path.abspath(__file__))


# --- a task that trains in no time: seed s answers s, the test split wants 2 ----------

class ConstantTask(SeedsConstantTask):
    """``test_seeds``' task, with validation and test both wanting 2."""
    targets = {"val": 2.0, "test": 2.0}


def run_constant(out_dir, capsys, *extra, seed=2):
    """A run of ConstantTask (seed 2: mae 0, the budget holds; seed 0: mae 2, missed):
    ``(exit code, stdout, stderr)``."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda argv: pipeline.main(ConstantTask(), argv),
                 ["--version", "x", "--seed", str(seed), "--out-dir", str(out_dir),
                  "--no-micro", "--quiet", *extra])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


CONSTANT_SCRIPT = (
    "import sys; sys.path[:0] = [{root!r}, {tests!r}]\n"
    "from common import pipeline; from common.cli import run_main\n"
    "import test_publish\n"
    "run_main(lambda argv: pipeline.main(test_publish.ConstantTask(), argv), "
    "['--version', 'x', '--seed', '2', '--out-dir', {out!r}, '--no-micro'])\n")


# --- the output folder is checked before training -------------------------------------

@pytest.mark.parametrize("case, fragment", [
    ("dangling", "a symbolic link to a missing target"),
    ("loop", "Too many levels of symbolic links"),
    ("long", "File name too long"),
    ("under_dangling", "a symbolic link to a missing target"),
])
def test_unusable_output_folders_are_refused_before_training(tmp_path, case, fragment):
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop2", tmp_path / "loop")
    os.symlink(tmp_path / "loop", tmp_path / "loop2")
    path = {"dangling": tmp_path / "dangling", "loop": tmp_path / "loop",
            "long": tmp_path / "new" / ("x" * 300),
            "under_dangling": tmp_path / "dangling" / "sub"}[case]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserError, match=fragment):
        artifacts.check_output_dir(str(path))
    assert sorted(os.listdir(tmp_path)) == before  # the probe left nothing
    artifacts.check_output_dir(str(tmp_path / "new" / "deeper"))  # creatable: fine
    assert sorted(os.listdir(tmp_path)) == before


# --- publishing as a unit ---------------------------------------------------------------

def test_a_failed_publish_removes_the_files_it_created(tmp_path, monkeypatch):
    (tmp_path / "old.json").write_bytes(b"old")
    real_replace = os.replace

    def fail_on_json(src, dst):
        if str(dst).endswith("new.json"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", fail_on_json)
    with pytest.raises(UserError, match="Input/output error.*nothing was written"):
        artifacts.publish(str(tmp_path), {"new.bin": b"m", "old.json": b"new",
                                          "new.json": b"{}"})
    assert sorted(os.listdir(tmp_path)) == ["old.json"]  # new.bin gone, no temp file
    assert (tmp_path / "old.json").read_bytes() == b"old"


def test_a_signal_inside_the_moves_waits_for_them(tmp_path, monkeypatch):
    (tmp_path / "m.bin").write_bytes(b"old model")
    (tmp_path / "m.json").write_bytes(b"old json")
    real_replace = os.replace

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("m.bin"):  # Ctrl-C right after the model's move
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(os, "replace", replace_then_signal)
    artifacts.WRITTEN.clear()
    with pytest.raises(KeyboardInterrupt):
        artifacts.publish(str(tmp_path), {"m.bin": b"new model", "m.json": b"new json"})
    # both moved (not the new model beside the old JSON), and the interrupt knows it
    assert (tmp_path / "m.bin").read_bytes() == b"new model"
    assert (tmp_path / "m.json").read_bytes() == b"new json"
    assert artifacts.WRITTEN == [str(tmp_path / "m.bin"), str(tmp_path / "m.json")]
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.json"]


def test_disk_full_names_the_reason_and_the_file(tmp_path):
    # a real write error from the system: a file-size limit (EFBIG), as ENOSPC would
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10000, hard))
    try:
        with pytest.raises(UserError) as error:
            artifacts.publish(str(tmp_path), {"m.json": b"{}", "m.bin": b"x" * 20000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    message = str(error.value)
    assert f"(File too large: {str(tmp_path / 'm.bin')!r}); nothing was written" in message
    assert "None" not in message and os.listdir(tmp_path) == []


def test_a_second_publish_waits_for_the_lock(tmp_path):
    folder = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # a run in the middle of its publish
    script = ("import sys; sys.path.insert(0, {root!r})\n"
              "from common import artifacts\n"
              "artifacts.publish({out!r}, {{'m.bin': b'second', 'm.json': b'second'}})\n")
    process = subprocess.Popen([sys.executable, "-c", script.format(root=ROOT,
                                                                    out=str(tmp_path))],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "waiting for another run" in line
        time.sleep(0.5)
        assert process.poll() is None and os.listdir(tmp_path) == []
    finally:
        os.close(folder)  # the first run is done
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert (tmp_path / "m.bin").read_bytes() == b"second"


def test_temp_files_of_runs_killed_outright_are_removed(tmp_path):
    stale = [".publish-4242-old0.tmp", ".publish-abcd1234.tmp"]  # any age: lock is free
    old = [".k3j4l5m6.tmp", ".probe-z9y8x7w6.tmp"]             # an earlier version's
    recent = [".q1w2e3r4.tmp"]                                  # perhaps being written
    mine = ["notes.tmp", ".hidden"]                             # not names publish makes
    for name in stale + old + recent + mine:
        (tmp_path / name).write_bytes(b"x")
    hour_ago = time.time() - 2 * artifacts.STALE_SECONDS
    for name in old:
        os.utime(tmp_path / name, (hour_ago, hour_ago))
    artifacts.publish(str(tmp_path), {"m.bin": b"m"})
    assert sorted(os.listdir(tmp_path)) == sorted(recent + mine + ["m.bin"])


# --- a model that meets its budget is not silently replaced ------------------------------

def test_a_model_meeting_its_budget_is_kept_unless_forced(tmp_path, capsys):
    out = tmp_path / "models"
    code, _, _ = run_constant(out, capsys, seed=2)
    assert code == 0
    shipped = {name: (out / name).read_bytes() for name in os.listdir(out)}
    code, text, err = run_constant(out, capsys, seed=0)  # a worse trial run
    assert code == 3 and err == ""
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == shipped
    kept = [line for line in text.splitlines() if line.startswith("kept ")]
    assert kept == [f"kept {out / 'const_x.tflite.zlib'} and its JSON: their budget "
                    "holds, this run's model misses it (mae 0 -> 2); --force replaces "
                    "them"]
    assert "wrote nothing" in text
    code, text, _ = run_constant(out, capsys, "--force", seed=0)
    assert code == 3 and json.loads((out / "const_x.json").read_text())["metrics"]["mae"] == 2
    assert f"replaced {out / 'const_x.tflite.zlib'} (budget held -> MISSED): mae 0 -> 2" \
        in text
    code, text, _ = run_constant(out, capsys, seed=1)  # missed -> held: replaced, said
    assert code == 0 and "(budget MISSED -> held): mae 2 -> 1" in text


def test_model_sha256_binds_the_pair_and_evaluate_warns_on_a_mixed_one(tmp_path, capsys):
    out = tmp_path / "models"
    run_constant(out, capsys, seed=2)
    model = out / "const_x.tflite.zlib"
    recorded = json.loads((out / "const_x.json").read_text())
    assert recorded["model_sha256"] == artifacts.sha256_file(model)
    assert artifacts.pair_warning(artifacts.read_model(str(model))) is None
    other = tmp_path / "other"
    run_constant(other, capsys, seed=1)
    os.replace(other / "const_x.tflite.zlib", model)  # seed 1's model, seed 2's JSON
    code, _, err = run_constant(out, capsys, "--evaluate", str(model))
    assert code == 0 and err.count("\n") == 1  # a warning, not an error
    assert err.startswith("warning: ") and "describes another model" in err
    del recorded["model_sha256"]  # a JSON from before the key: nothing to say
    (out / "const_x.json").write_bytes(artifacts.json_bytes(recorded))
    assert artifacts.pair_warning(artifacts.read_model(str(model))) is None


# --- interrupts say what was kept ----------------------------------------------------------

def test_an_interrupt_during_the_summary_says_the_files_were_written(tmp_path, capsys,
                                                                    monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "report", interrupted)
    out = tmp_path / "models"
    code, _, err = run_constant(out, capsys)
    assert code == 130
    assert err == (f"error: interrupted; wrote {out / 'const_x.tflite.zlib'}, "
                   f"{out / 'const_x.json'} (the summary is incomplete)\n")
    code, _, err = run_constant(tmp_path / "o2", capsys, "--evaluate",
                                str(out / "const_x.tflite.zlib"))
    assert err == "error: interrupted; nothing was written\n"  # not the last run's files


# --- model files too large to be models ------------------------------------------------------

def test_oversized_model_files_are_refused_without_reading_them_whole(tmp_path):
    with pytest.raises(UserError, match="holds more than 64 MiB"):
        artifacts.read_model("/dev/zero")
    bomb = tmp_path / "bomb.tflite.zlib"  # 65 kB that inflate to 65 MiB
    squeeze = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    bomb.write_bytes(b"".join(squeeze.compress(chunk) for _ in range(65)) + squeeze.flush())
    assert os.path.getsize(bomb) < 100_000
    with pytest.raises(UserError, match="decompresses to more than 64 MiB"):
        artifacts.read_model(str(bomb))


# --- output nobody reads -------------------------------------------------------------------

@pytest.mark.parametrize("stdout", ["closed_pipe", "closed", "full"])
def test_unwritable_stdout_changes_neither_the_files_nor_the_exit_code(tmp_path, stdout):
    out = tmp_path / "models"
    script = CONSTANT_SCRIPT.format(root=ROOT, tests=TESTS, out=str(out))
    kwargs = {}
    if stdout == "closed_pipe":  # `| head -0`: the reader has gone
        read_end, write_end = os.pipe()
        os.close(read_end)
        kwargs["stdout"] = write_end
    elif stdout == "closed":     # `>&-`
        kwargs.update(stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    else:                        # `>/dev/full`
        kwargs["stdout"] = open("/dev/full", "w")
    result = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE,
                            text=True, timeout=300, **kwargs)
    if stdout == "closed_pipe":
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: stdout cannot be written"), \
        result.stderr
    assert sorted(os.listdir(out)) == ["const_x.json", "const_x.tflite.zlib"]
    assert json.loads((out / "const_x.json").read_text())["model_sha256"] == \
        artifacts.sha256_file(out / "const_x.tflite.zlib")
