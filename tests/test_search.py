"""The search on a fake task (no training: fast and exact) and end to end on the
forecasting script with synthetic data."""
import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

import forecast_train  # noqa: E402
from common import search  # noqa: E402
from common.budget import Limit  # noqa: E402
from common.cli import run_main  # noqa: E402
from common.errors import UserError  # noqa: E402
from conftest import ROOT, write_jena_csv  # noqa: E402


@dataclass(frozen=True)
class FakeRecipe:
    width: int = 1
    max_zlib_bytes: int = 1000

    def limits(self):
        return (Limit("error", 0.5), Limit("zlib_bytes", self.max_zlib_bytes))


def fake_task(evaluate):
    def suggest(trial, base):
        return FakeRecipe(width=trial.suggest_int("width", 1, 20))
    return search.SearchTask(
        name="fake", base_recipe=FakeRecipe(), suggest=suggest, evaluate=evaluate,
        error=lambda m, r: m["error"], error_label="error", error_limit=0.5,
        script="unused", argv=(), markers=(("reference", 900, 0.4),))


def size_from_width(recipe, seed):
    # width > 10 breaks the size budget; the error falls with width
    return {"zlib_bytes": 100 * recipe.width, "error": 1.0 / recipe.width}


def search_args(tmp_path, n, **extra):
    values = dict(search=n, storage=None, workers=1, export_best=False, export_trial=None,
                  export_max_bytes=None, search_worker=0, seed=0, out_dir=str(tmp_path))
    values.update(extra)
    return argparse.Namespace(**values)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_infeasible_trials_are_marked_not_dropped(tmp_path):
    search.run(fake_task(size_from_width), search_args(tmp_path, 12))
    rows = read_csv(tmp_path / "search" / "fake.csv")
    assert len(rows) == 12 and all(r["state"] == "COMPLETE" for r in rows)
    for row in rows:
        width = int(row["width"])
        # feasibility is the resource budget (size); the error budget is an objective
        assert row["feasible"] == str(100 * width < 1000)
        assert row["budget_holds_on_validation"] == str(100 * width < 1000
                                                         and 1.0 / width < 0.5)
    assert any(r["feasible"] == "False" for r in rows)
    png = (tmp_path / "search" / "fake.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_failing_trial_is_recorded_and_the_study_continues(tmp_path):
    def flaky(recipe, seed):
        if recipe.width % 2:
            raise RuntimeError("conversion failed for odd widths")
        return size_from_width(recipe, seed)
    search.run(fake_task(flaky), search_args(tmp_path, 6))
    rows = read_csv(tmp_path / "search" / "fake.csv")
    assert len(rows) == 6
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all("conversion failed" in r["fail_reason"] for r in failed)
    assert all(int(r["width"]) % 2 for r in failed)


def test_interrupted_search_resumes_without_losing_trials(tmp_path):
    calls = []

    def interrupted(recipe, seed):
        calls.append(recipe.width)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return size_from_width(recipe, seed)
    with pytest.raises(KeyboardInterrupt):
        search.run(fake_task(interrupted), search_args(tmp_path, 5))
    search.run(fake_task(size_from_width), search_args(tmp_path, 5))
    rows = read_csv(tmp_path / "search" / "fake.csv")
    assert [int(r["width"]) for r in rows[:2]] == calls[:2]   # kept
    states = [r["state"] for r in rows]
    assert states.count("COMPLETE") + states.count("FAIL") == 5


def test_export_picks_lowest_error_feasible_trial(tmp_path):
    recipe, info = search.run(fake_task(size_from_width),
                              search_args(tmp_path, 10, export_best=True))
    rows = [r for r in read_csv(tmp_path / "search" / "fake.csv") if r["feasible"] == "True"]
    best = min(rows, key=lambda r: (float(r["error"]), float(r["zlib_bytes"])))
    assert info["trial"] == int(best["number"]) and recipe.width == int(best["width"])
    cap = float(best["zlib_bytes"]) - 1  # the best trial no longer qualifies
    recipe, info = search.run(fake_task(size_from_width),
                              search_args(tmp_path, 10, export_best=True,
                                          export_max_bytes=cap))
    small = [r for r in rows if float(r["zlib_bytes"]) <= cap]
    assert small and 100 * recipe.width <= cap
    assert recipe.width == int(min(small, key=lambda r: float(r["error"]))["width"])


def test_unreachable_storage_is_a_clear_error(tmp_path):
    args = search_args(tmp_path, 1, storage="sqlite:////nonexistent/folder/study.db")
    with pytest.raises(UserError, match="cannot open the search storage"):
        search.run(fake_task(size_from_width), args)


def test_forecast_search_end_to_end_resume_and_export(tmp_path, capsys):
    csv_path = write_jena_csv(tmp_path / "jena.csv", 700)
    base = ["--version", "b", "--csv", str(csv_path), "--epochs", "2", "--quiet",
            "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        run_main(forecast_train.main, base + ["--search", "2"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "trial 0:" in out and "trial 1:" in out and "feasible front" in out
    folder = tmp_path / "out" / "search"
    assert len(read_csv(folder / "forecast_b.csv")) == 2
    assert (folder / "forecast_b.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        run_main(forecast_train.main, base + ["--search", "3", "--export-trial", "1"])
    rows = read_csv(folder / "forecast_b.csv")
    assert len(rows) == 3
    report = json.loads((tmp_path / "out" / "forecast_b.json").read_text())
    assert report["search"]["trial"] == 1
    assert report["search"]["params"]["alpha"] == pytest.approx(float(rows[1]["alpha"]))
    assert report["recipe"]["alpha"] == pytest.approx(float(rows[1]["alpha"]))


def test_search_without_optuna_says_how_to_install(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("no optuna")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(UserError, match="requirements-search.txt"):
        search.run(fake_task(size_from_width), search_args(tmp_path, 1))


def test_kws_search_trial_end_to_end(tmp_path, speech_dir, capsys):
    import kws_train
    with pytest.raises(SystemExit) as exit_info:
        run_main(kws_train.main, [
            "--version", "b", "--data-dir", str(speech_dir), "--split-dir", str(speech_dir),
            "--out-dir", str(tmp_path / "out"), "--no-download", "--epochs", "1",
            "--alpha", "0.05", "--quiet", "--search", "1"])
    assert exit_info.value.code == 0
    rows = read_csv(tmp_path / "out" / "search" / "kws_b.csv")
    assert len(rows) == 1 and rows[0]["state"] == "COMPLETE", rows
    assert rows[0]["features"] in ("mfcc", "stft") and float(rows[0]["inference_ms"]) > 0
    assert "alpha" not in rows[0]  # fixed on the command line, so not searched


@pytest.mark.parametrize("version", ["a", "b", "c"])
def test_kws_recipes_are_points_of_the_search_space(version):
    import optuna
    import kws_train
    recipe = kws_train.RECIPES[version]
    trial = optuna.trial.FixedTrial(kws_train.search_params(recipe))
    assert kws_train.suggest(trial, recipe, fixed=set()) == recipe


@pytest.mark.parametrize("version", ["a", "b"])
def test_forecast_recipes_are_points_of_the_search_space(version):
    import optuna
    recipe = forecast_train.RECIPES[version]
    trial = optuna.trial.FixedTrial(forecast_train.search_params(recipe))
    assert forecast_train.suggest(trial, recipe, fixed=set()) == recipe


def test_workers_share_one_study_with_different_proposals(tmp_path):
    csv_path = write_jena_csv(tmp_path / "jena.csv", 700)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "forecast_train.py"), "--version", "b",
         "--csv", str(csv_path), "--epochs", "1", "--quiet", "--out-dir", str(out),
         "--search", "4", "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "search" / "forecast_b.csv")
    assert len(rows) >= 4 and all(r["state"] == "COMPLETE" for r in rows)
    proposals = [tuple(v for k, v in r.items() if k in ("alpha", "sparsity")) for r in rows]
    assert len(set(proposals)) == len(proposals)
