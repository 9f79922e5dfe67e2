"""The multi-host search for real: two separate processes, started together as on two
hosts, extend one study on a throwaway PostgreSQL server, with the URL form
docs/model_search.md documents and the driver requirements-search.txt installs."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

from common import search  # noqa: E402
from conftest import ROOT, write_jena_csv  # noqa: E402


def postgres_bindir():
    """The newest PostgreSQL server's binaries (Debian keeps them off PATH), or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        return os.path.dirname(max(found, key=lambda p: float(p.split("/")[4])))
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """The URL of a fresh PostgreSQL server listening on a unix socket only, stopped
    and removed afterwards. initdb refuses to run as root (CI runs as root): then the
    server runs as ``nobody``, in a folder outside pytest's root-only temporary one."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    folder = tempfile.mkdtemp(prefix="tinyml-search-pg-")
    as_user = []
    if os.geteuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data = os.path.join(folder, "data")

    def pg(*command):
        done = subprocess.run([*as_user, *command], cwd=folder, capture_output=True,
                              text=True, timeout=120)
        if done.returncode:
            log = os.path.join(folder, "log")
            raise RuntimeError(f"{command[0]} failed: {done.stderr}"
                               f"{open(log).read() if os.path.exists(log) else ''}")
    try:
        pg(f"{bindir}/initdb", "-D", data, "-U", "search", "--auth=trust", "--no-sync",
           "-E", "UTF8", "--locale=C")
        pg(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w",
           "-o", f"-k {folder} -c listen_addresses='' -c fsync=off", "start")
        yield f"postgresql://search@/postgres?host={folder}&port=5432"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"],
                           cwd=folder, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_processes_extend_one_postgresql_study(postgres, tmp_path):
    import optuna
    csv_path = write_jena_csv(tmp_path / "jena.csv", 700)
    hosts = {}
    for host in ("host-a", "host-b"):   # not --search-worker: each writes its own outputs
        hosts[host] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "forecast_train.py"), "--version", "b",
             "--csv", str(csv_path), "--epochs", "2", "--out-dir", str(tmp_path / host),
             "--search", "4", "--storage", postgres],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = {host: process.communicate(timeout=300) for host, process in hosts.items()}
    for host, process in hosts.items():
        assert process.returncode == 0, outputs[host][1]
        assert (tmp_path / host / "search" / "forecast_b.png").stat().st_size > 1000
        with open(tmp_path / host / "search" / "forecast_b.csv") as f:
            assert len(f.readlines()) >= 1 + 4

    url = search.storage_url(type("Args", (), {"storage": postgres}), "forecast_b")
    trials = optuna.load_study(study_name="forecast_b", storage=url).get_trials()
    assert len([t for t in trials if t.state.name == "COMPLETE"]) >= 4, trials
    workers = {}
    for t in trials:
        workers.setdefault(t.user_attrs["worker"]["pid"], []).append(t)
    # both processes contributed trials, with their own sampler seeds
    assert set(workers) == {process.pid for process in hosts.values()}
    assert len({ts[0].user_attrs["worker"]["sampler_seed"] for ts in workers.values()}) == 2
    for host, process in hosts.items():
        numbers = [t.number for t in workers[process.pid]]
        assert all(f"trial {n}:" in outputs[host][0] for n in numbers)
    # and no two trials share their parameters (the recipe was enqueued once)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), params


def test_processes_starting_together_on_an_empty_database_all_open_it(postgres):
    """They race to create Optuna's tables and the study: the losers retry or load it,
    and the recipe is enqueued once."""
    import threading
    import types
    import psycopg2
    connection = psycopg2.connect(postgres)
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE race")
    connection.close()
    url = postgres.replace("/postgres?", "/race?")
    task = search.SearchTask(
        name="race", base_recipe=None, suggest=None, evaluate=None, error=None,
        error_label="", error_limit=1, script="", argv=(), base_params={"width": 3})
    args = types.SimpleNamespace(storage=url, seed=0, search_worker=0)
    start, errors = threading.Barrier(4), []

    def open_study():
        start.wait()
        try:
            search.open_study(task, args)
        except Exception as err:
            errors.append(err)
    threads = [threading.Thread(target=open_study) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    trials = search.open_study(task, args).get_trials()
    assert [t.system_attrs["fixed_params"] for t in trials] == [{"width": 3}]
