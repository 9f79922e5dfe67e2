"""The search on a fake task (no training: fast and exact) and end to end on the
forecasting script with synthetic data."""
import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

import forecast_train  # noqa: E402
from common import search  # noqa: E402
from common.budget import Limit  # noqa: E402
from common.cli import run_main  # noqa: E402
from common.errors import Terminated, UserError  # noqa: E402
from conftest import (ROOT, TF_TURNS_A_SIGNAL_INTO, signal_lost_in_tensorflow,  # noqa: E402
                      write_jena_csv)


@dataclass(frozen=True)
class FakeRecipe:
    width: int = 1
    max_zlib_bytes: int = 1000

    def limits(self):
        return (Limit("error", 0.5), Limit("zlib_bytes", self.max_zlib_bytes))


def fake_task(evaluate, base_params=None):
    def suggest(trial, base):
        return FakeRecipe(width=trial.suggest_int("width", 1, 20))
    return search.SearchTask(
        name="fake", base_recipe=FakeRecipe(), suggest=suggest, evaluate=evaluate,
        error=lambda m, r: m["error"], error_label="error", error_limit=0.5,
        script="unused", argv=(), markers=(("reference", 900, 0.4),),
        base_params=base_params)


def size_from_width(recipe, seed):
    # width > 10 breaks the size budget; the error falls with width
    return {"zlib_bytes": 100 * recipe.width, "error": 1.0 / recipe.width}


def search_args(tmp_path, n, **extra):
    values = dict(search=n, storage=None, workers=1, export_best=False, export_trial=None,
                  export_max_bytes=None, search_worker=0, search_parent=0, seed=0,
                  out_dir=str(tmp_path))
    values.update(extra)
    return argparse.Namespace(**values)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def load_study(tmp_path, name="fake"):
    import optuna
    return optuna.load_study(study_name=name,
                             storage=f"sqlite:///{tmp_path}/search/{name}.db")


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
    with open(tmp_path / "search" / "fake.csv") as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header)), header   # zlib_bytes once
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
    with pytest.raises(KeyboardInterrupt, match="the 2 finished trials are kept in the study"):
        search.run(fake_task(interrupted), search_args(tmp_path, 5))
    search.run(fake_task(size_from_width), search_args(tmp_path, 5))
    rows = read_csv(tmp_path / "search" / "fake.csv")
    assert [int(r["width"]) for r in rows[:2]] == calls[:2]   # kept
    # the interrupted trial is kept as failed, marked, and does not count toward the 5
    assert [r["state"] for r in rows] == ["COMPLETE"] * 2 + ["FAIL"] + ["COMPLETE"] * 3
    assert rows[2]["fail_reason"] == "interrupted"
    assert load_study(tmp_path).trials[2].user_attrs["interrupted"] is True


@pytest.fixture
def optuna_log():
    """The messages Optuna logs (its handler keeps the stderr of when it was made)."""
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def signal_during_trial(signum, tf_turns_it_into):
    """An evaluate function whose second trial gets ``signum`` (as from Ctrl-C or
    kill), which TensorFlow then turns into a SystemError or swallows."""
    calls = []

    def evaluate(recipe, seed):
        calls.append(recipe.width)
        if len(calls) == 2:
            signal_lost_in_tensorflow(signum, tf_turns_it_into)
        return size_from_width(recipe, seed)
    return evaluate, calls


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt),
                                            (signal.SIGTERM, Terminated)])
@pytest.mark.parametrize("tf_turns_it_into", TF_TURNS_A_SIGNAL_INTO)
def test_a_signal_stops_the_search_whatever_tensorflow_makes_of_it(
        tmp_path, optuna_log, signum, raised, tf_turns_it_into):
    evaluate, calls = signal_during_trial(signum, tf_turns_it_into)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with pytest.raises(raised, match="^the 1 finished trial is kept in the study; run the "
                                     "same command to resume$") as info:
        search.run(fake_task(evaluate), search_args(tmp_path, 5))
    assert raised is KeyboardInterrupt or type(info.value) is Terminated
    assert len(calls) == 2   # stopped at once: no further trial
    trials = load_study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[1].user_attrs["interrupted"] is True
    assert optuna_log == []   # Optuna's log of it (with a long traceback) is muted
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers


def test_an_interrupt_during_optunas_bookkeeping_leaves_no_running_trial(
        tmp_path, monkeypatch):
    """Ctrl-C after the objective returned, while Optuna records the result: Optuna
    then raises an UnboundLocalError of its own, and the trial is left RUNNING (a
    resume would fail it as stale and count it)."""
    import optuna.study._optimize

    def tell_interrupted(**kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    monkeypatch.setattr(optuna.study._optimize, "_tell_with_warning", tell_interrupted)
    with pytest.raises(KeyboardInterrupt, match="the 0 finished trials are kept"):
        search.run(fake_task(size_from_width), search_args(tmp_path, 3))
    [trial] = load_study(tmp_path).trials
    assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"] is True


def test_real_failures_are_still_logged_and_recorded(tmp_path, capsys, optuna_log):
    def broken(recipe, seed):
        raise SystemError("not an interrupt")
    search.run(fake_task(broken), search_args(tmp_path, 2))
    rows = read_csv(tmp_path / "search" / "fake.csv")
    assert [r["fail_reason"] for r in rows] == ["SystemError: not an interrupt"] * 2
    assert "-> fail: SystemError: not an interrupt" in capsys.readouterr().out  # progress
    assert [r.exc_info[0] for r in optuna_log if r.exc_info] == [SystemError] * 2


def test_constraints_mark_over_budget_trials_infeasible(tmp_path):
    """What Optuna itself sees (its samplers and Pareto front honour it), not only our
    user attribute: the constraint is stored as a system attribute per budget limit."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
    args = search_args(tmp_path, 2)
    task = fake_task(size_from_width)
    study = search.open_study(task, args)
    study.enqueue_trial({"width": 5})    # 500 B: within the 1000 B budget
    study.enqueue_trial({"width": 15})   # 1500 B: over it
    search.run_trials(task, args, study)
    within, over = load_study(tmp_path).get_trials()
    assert within.system_attrs[f"{_CONSTRAINTS_KEY}:zlib_bytes"] == pytest.approx(-0.5)
    assert over.system_attrs[f"{_CONSTRAINTS_KEY}:zlib_bytes"] == pytest.approx(0.5)
    assert within.constraints == {"zlib_bytes": pytest.approx(-0.5)}
    assert within.user_attrs["feasible"] is True and over.user_attrs["feasible"] is False
    # the over-budget trial is smaller-error but not on Optuna's (feasible) front
    assert [t.number for t in load_study(tmp_path).best_trials] == [within.number]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask() outside optimize
def test_hosts_sample_different_trials_and_a_local_search_is_reproducible(
        tmp_path, monkeypatch):
    """Two processes on one --storage study, as on two hosts, start from different
    sampler seeds and so propose different trials; a plain local search is --seed."""
    import socket
    storage = f"sqlite:///{tmp_path}/shared.db"
    proposals, seeds = [], []
    for host, pid in (("host-a", 4242), ("host-b", 4242)):
        monkeypatch.setattr(socket, "gethostname", lambda: host)
        monkeypatch.setattr(os, "getpid", lambda: pid)
        args = search_args(tmp_path, 1, storage=storage)
        seeds.append(search.sampler_seed(args))
        trial = search.open_study(fake_task(size_from_width), args).ask()
        proposals.append([trial.suggest_float(f"x{i}", 0, 1) for i in range(3)])
    assert seeds[0] != seeds[1] and proposals[0] != proposals[1]
    monkeypatch.undo()
    widths = []
    for folder in ("first", "second"):
        search.run(fake_task(size_from_width), search_args(tmp_path / folder, 4, seed=7))
        rows = read_csv(tmp_path / folder / "search" / "fake.csv")
        widths.append([r["width"] for r in rows])
    assert widths[0] == widths[1]
    assert search.sampler_seed(search_args(tmp_path, 4, seed=7)) == 7


def test_the_recipe_is_enqueued_once_by_the_process_that_created_the_study(tmp_path):
    """Processes started together: the second one may find the study created but still
    empty; it must not enqueue the recipe again (two trials with the same parameters)."""
    import optuna
    task = fake_task(size_from_width, base_params={"width": 3})
    args = search_args(tmp_path, 1)
    optuna.create_study(study_name="fake", storage=search.storage_url(args, "fake"),
                        directions=["minimize", "minimize"])   # the other process, so far
    assert search.open_study(task, args).get_trials() == []
    folder = tmp_path / "fresh"
    study = search.open_study(task, search_args(folder, 1))
    assert [t.params for t in study.get_trials()] == [{}]   # enqueued: waiting
    assert study.get_trials()[0].system_attrs["fixed_params"] == {"width": 3}
    # resumed after an interrupt that stopped that very trial: enqueued again

    def interrupted(recipe, seed):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        search.run(fake_task(interrupted, base_params={"width": 3}), search_args(folder, 1))
    search.run(task, search_args(folder, 1))
    rows = read_csv(folder / "search" / "fake.csv")
    assert [(r["width"], r["state"]) for r in rows] == [("3", "FAIL"), ("3", "COMPLETE")]


def test_storage_error_hides_the_password(tmp_path):
    args = search_args(tmp_path, 1, storage="postgresql://search:Pa55%40word@127.0.0.1:1/db")
    with pytest.raises(UserError, match="cannot open the search storage") as info:
        search.run(fake_task(size_from_width), args)
    assert "Pa55" not in str(info.value) and "search:***@127.0.0.1:1/db" in str(info.value)
    # in the reason too, as written or decoded (a driver may quote the URL back)
    url = "postgresql://u:p%40ss@h:x/db"
    text = search.hide_password(f"bad port in {url!r} (password 'p@ss')", url)
    assert text == "bad port in 'postgresql://u:***@h:x/db' (password '***')"


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


SPACES = {"kws_train": "common.kws.search_space",
          "forecast_train": "common.forecast.search_space"}


@pytest.mark.parametrize("script, version", [  # every version of every script
    (script, version) for script in SPACES
    for version in __import__(script).RECIPES])
def test_recipes_are_points_of_the_search_space(script, version):
    import importlib
    import optuna
    recipe = importlib.import_module(script).RECIPES[version]
    space = importlib.import_module(SPACES[script]).SEARCH_SPACE
    trial = optuna.trial.FixedTrial(space.params(recipe))
    assert space.suggest(trial, recipe, fixed=set()) == recipe


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


@contextlib.contextmanager
def two_workers_in_trials(tmp_path):
    """A ``--workers 2`` search of 50 trials, yielded once both processes run a trial:
    (the parent process, a function listing the study's trials, the two worker pids).
    On the way out nothing is left running."""
    import optuna
    csv_path = write_jena_csv(tmp_path / "jena.csv", 700)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "forecast_train.py"), "--version", "b",
         "--csv", str(csv_path), "--epochs", "2", "--out-dir", str(out),
         "--search", "50", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    storage = f"sqlite:///{out}/search/forecast_b.db"

    def trials():
        """The study's trials, once the search has made its tables: opening the
        storage earlier would race the search's own schema creation ("table studies
        already exists"), so readiness is asked read-only first."""
        import sqlite3
        try:
            with sqlite3.connect(f"file:{out}/search/forecast_b.db?mode=ro", uri=True) as db:
                if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                                  "'version_info'").fetchone()[0] or \
                        not db.execute("SELECT count(*) FROM version_info").fetchone()[0]:
                    return []
            return optuna.load_study(study_name="forecast_b", storage=storage).get_trials()
        except Exception:  # not created yet, or locked for a moment
            return []
    deadline = time.time() + 240
    pids = set()
    try:
        while len(pids) < 2:   # both in a trial
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.5)
            pids = {t.user_attrs["worker"]["pid"] for t in trials()
                    if "worker" in t.user_attrs}
        yield process, trials, pids
    finally:
        for pid in pids | {process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_the_workers_with_one_line(tmp_path):
    """Ctrl-C, as a terminal sends it (SIGINT to the command's process group), while
    both processes of ``--workers 2`` run trials: the helper stops too (the parent
    forwards the signal and waits for it), one line is printed, exit 130, and no trial
    is left running."""
    with two_workers_in_trials(tmp_path) as (process, trials, pids):
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: interrupted; the 0 finished trials are kept in the study; run the same "
        "command to resume"], err
    assert "Traceback" not in err
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)   # waited for
    assert not [t for t in trials() if t.state.name == "RUNNING"]
    assert {t.user_attrs["worker"]["pid"] for t in trials()
            if t.user_attrs.get("interrupted")} == pids


def running(pid):
    """Whether ``pid`` runs (a zombie nobody reaped yet has stopped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_helper_stops_when_its_parent_is_killed_outright(tmp_path):
    """SIGKILL to the parent alone (nothing forwards a signal): the helper notices it
    was orphaned, stops as if sent SIGTERM, and fails its interrupted trial, instead of
    running the remaining trials on its own."""
    with two_workers_in_trials(tmp_path) as (process, trials, pids):
        process.kill()
        process.communicate(timeout=60)
        (helper,) = pids - {process.pid}
        deadline = time.time() + 120
        while running(helper) and time.time() < deadline:
            time.sleep(0.5)
        assert not running(helper), "the orphaned helper kept running"
    helper_trials = [t for t in trials()
                     if t.user_attrs.get("worker", {}).get("pid") == helper]
    assert helper_trials and helper_trials[-1].user_attrs.get("interrupted")
    assert not [t for t in helper_trials if t.state.name == "RUNNING"]


@pytest.mark.parametrize("version", ["a", "b", "c", "d", "e"])
def test_kws_search_space_rebuilds_each_shipped_recipe(version):
    """Trial 0 of a search is the shipped recipe, given as ``search_params``: the
    knobs must rebuild exactly its features and learning rate from them."""
    import optuna
    import kws_train
    from common.kws.search_space import search_knobs, search_params
    recipe = kws_train.RECIPES[version]
    knobs = search_knobs(optuna.trial.FixedTrial(search_params(recipe)), recipe)
    assert knobs == {"features": recipe.features, "learning_rate": recipe.learning_rate}


@pytest.mark.parametrize("message, opens", [
    ("table alembic_version already exists", 2),   # lost the race: opened again
    ("unable to open database file", 1)])          # cannot open: the error at once
def test_a_process_that_loses_the_race_to_create_the_tables_opens_the_storage_again(
        monkeypatch, message, opens):
    """SQLite reports the lost race as an operational error (a CI run's two searchers
    failed on it); the same error type for a file that cannot be opened is not retried."""
    import optuna
    import sqlalchemy.exc
    from common import search
    calls = []

    def storage(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE", None, Exception(message))
        return "storage"
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    monkeypatch.setattr(search.time, "sleep", lambda s: None)
    if opens == 2:
        assert search._rdb_storage(optuna, "sqlite:///x.db") == "storage"
    else:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            search._rdb_storage(optuna, "sqlite:///x.db")
    assert len(calls) == opens
