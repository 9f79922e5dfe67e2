"""The README's two set-up commands are what a newcomer needs: the install brings every
requirements file, the main job leaves a clone clean, and CI runs these very lines."""
import glob
import os
import shlex
import shutil
import subprocess

import pytest

from conftest import ROOT


def readme_commands():
    """The README's indented (code) lines, in order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return [line[4:].rstrip("\n") for line in f
                if line.startswith("    ") and not line.startswith("     ")]


def test_the_install_brings_every_requirements_file():
    install = shlex.split(readme_commands()[0])
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "requirements*.txt"))}
    installed = {install[i + 1] for i, word in enumerate(install) if word == "-r"}
    assert installed == files


def test_the_test_command_runs_the_whole_suite():
    assert readme_commands()[1] == "python -m pytest -q tests"


@pytest.mark.skipif(shutil.which("git") is None
                    or not os.path.isdir(os.path.join(ROOT, ".git"))
                    and not os.path.isfile(os.path.join(ROOT, ".git")),
                    reason="not a git checkout")
def test_the_main_job_writes_nothing_git_tracks():
    main_job = shlex.split(readme_commands()[0].rsplit("&&", 1)[1])
    assert main_job[:2] == ["python", "forecast_train.py"] and "--out-dir" in main_job
    out_dir = main_job[main_job.index("--out-dir") + 1]
    for name in ("forecast_a.tflite.zlib", "forecast_a.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", os.path.join(out_dir, name)],
                                 cwd=ROOT)
        assert ignored.returncode == 0, f"{out_dir}/{name} would show in git status"


def test_ci_runs_the_readme_lines():
    """The README's install (its main job left out: CI has no internet) and its test
    command, as CI's last two lines: a README edited alone fails here."""
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.rstrip("\n") for line in f if line.strip()]
    install, tests = readme_commands()[:2]
    assert ci[-2:] == [install.rsplit(" && ", 1)[0], tests]
