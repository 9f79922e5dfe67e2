"""Budget-aware multi-objective search over a version's recipe knobs, on Optuna.

Objectives (both minimized, measured on the .tflite with the validation split only):
the .tflite.zlib size in bytes and the task's error. Trials that break the version's
resource budget (size, latency) stay in the study, marked infeasible through Optuna's
constraints; the error budget is an objective, drawn on the plot, and whether the
whole budget holds on validation is recorded per trial. The test split is never used
here: it is used once, by the normal run that exports a trial.

Optuna and matplotlib are optional (requirements-search.txt); nothing in the core
pipelines imports this module unless ``--search`` or ``--export-best`` is given.
"""
import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Callable

from common import artifacts, cli
from common.budget import budget_holds, check_budget
from common.errors import Terminated, UserError, remember_stop, stop_handlers

INSTALL_HINT = "pip install -r requirements-search.txt"
HEARTBEAT_S = 30  # a trial whose process died is marked failed after 3 heartbeats
RESOURCE_METRICS = ("zlib_bytes", "inference_ms", "total_ms", "tflite_bytes", "arena_bytes")


@dataclass(frozen=True)
class SearchTask:
    """What the generic search needs to know about one script's version."""
    name: str                      # study name, e.g. "forecast_a"
    base_recipe: object
    suggest: Callable              # (trial, base_recipe) -> recipe
    evaluate: Callable             # (recipe, seed) -> validation metrics incl. zlib_bytes
    error: Callable                # (metrics, recipe) -> the error objective
    error_label: str               # axis label, e.g. "1 - accuracy (validation)"
    error_limit: float             # the budget's bound on the error objective
    script: str                    # the script and its command line, for --workers
    argv: tuple
    markers: tuple = ()            # (label, zlib_bytes, error) drawn on the plot
    base_params: dict = None       # the shipped recipe as search parameters: trial 0


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError(f"--search needs Optuna and matplotlib: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(args, name):
    if args.storage:
        # SQLAlchemy 2.1 maps a driverless postgresql:// to psycopg 3; the driver that
        # requirements-search.txt installs is psycopg2
        return re.sub(r"^postgresql://", "postgresql+psycopg2://", args.storage)
    folder = os.path.join(args.out_dir, "search")
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(folder, name))}.db"


def hide_password(text, url):
    """``text`` with the password of ``url`` (as written, and percent-decoded) replaced
    by ``***``: storage errors are printed, and end up in terminals and CI logs. The
    password runs to the last ``@`` of the authority, so an unescaped ``@`` in it
    masks too much rather than too little."""
    match = re.match(r"[^:/]*://[^:/@]*:([^/]*)@", url)
    if match and match.group(1):
        for secret in {match.group(1), urllib.parse.unquote(match.group(1))}:
            text = text.replace(secret, "***")
    return text


def sampler_seed(args):
    """``--seed`` for a plain local search, which stays reproducible. A shared study
    (``--storage``, or a ``--workers`` helper) mixes in the host name and the process id:
    processes sampling with one seed would all propose the same trials."""
    if not (args.storage or args.search_worker):
        return args.seed
    key = f"{args.seed}:{socket.gethostname()}:{os.getpid()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def _lost_the_table_race(err):
    """Processes that open an empty database together race to create Optuna's tables;
    the loser gets an integrity error, or "already exists" (PostgreSQL: a programming
    error; SQLite: an operational one, which otherwise means "cannot open")."""
    import sqlalchemy.exc
    return (isinstance(err, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError))
            or isinstance(err, sqlalchemy.exc.OperationalError)
            and "already exists" in str(err))


def _rdb_storage(optuna, url):
    """Optuna's RDB storage, opened again when this process lost the race to create
    its tables (``_lost_the_table_race``)."""
    import sqlalchemy.exc
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # "heartbeat_interval is experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=3 * HEARTBEAT_S)
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt == 2 or not _lost_the_table_race(err):
                raise
            time.sleep(1)


def open_study(task, args):
    """Create the study, or load it to resume: finished trials are never lost."""
    optuna = _optuna()
    url = storage_url(args, task.name)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(args))
    try:
        storage = _rdb_storage(optuna, url)
        try:
            study = optuna.create_study(study_name=task.name, storage=storage,
                                        directions=["minimize", "minimize"], sampler=sampler)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=task.name, storage=storage, sampler=sampler)
            created = False
    except Exception as err:  # SQLAlchemy raises many types; all mean "cannot open"
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        shown = args.storage or url
        raise UserError(hide_password(f"cannot open the search storage {shown!r}: {reason}",
                                      shown)) from None
    # The front always holds the recipe: enqueued by the process that created the study
    # (not by every process that finds it empty: processes starting together would each
    # enqueue it), or again when every trial so far was interrupted.
    trials = study.get_trials(deepcopy=False)
    if task.base_params and (created or trials and all(_interrupted(t) for t in trials)):
        study.enqueue_trial(task.base_params)
    return study


def constraint_values(limits, metrics):
    """One value per budget limit, <= 0 when it holds (Optuna's convention): the
    relative excess over the limit, at least 1e-9 for a strict limit met exactly."""
    values = {}
    for limit, verdict in zip(limits, check_budget(limits, metrics)):
        measured = verdict["measured"]
        excess = ((measured - limit.value) if limit.below else (limit.value - measured)
                  ) / abs(limit.value)
        values[limit.metric] = excess if verdict["ok"] else max(excess, 1e-9)
    return values


class Interrupt:
    """Ctrl-C (SIGINT) or SIGTERM during the search. The first signal is recorded,
    forwarded to the ``--workers`` helpers, and raised as KeyboardInterrupt (Terminated for
    SIGTERM); later ones are ignored, so they cannot break the bookkeeping of the
    interrupted trial. TensorFlow may turn the KeyboardInterrupt into another exception
    (a SystemError, which Optuna would record as an ordinary failure and go on) or swallow
    it: whatever a trial ends with once the flag is set, it is the interrupt."""

    def __init__(self):
        self.signum = None
        self.helpers = []   # the --workers processes to forward the signal to
        self.trial = None   # this process's latest trial

    def trigger(self, signum):
        if self.signum is None:
            self.signum = signum
            for helper in self.helpers:
                if helper.poll() is None:
                    helper.send_signal(signum)

    def handler(self, signum, frame):
        if self.signum is None:
            self.trigger(signum)
            raise remember_stop(self.exception())  # training stops at its next batch

    def exception(self, message=""):
        return (Terminated if self.signum == signal.SIGTERM else KeyboardInterrupt)(message)

    def caught(self, err):
        """Whether ``err`` means the search is being interrupted (recording it if so)."""
        if isinstance(err, KeyboardInterrupt):  # also raised by hand, or before our handler
            self.trigger(signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self):
        """The signal handlers while the search runs, and Optuna's log of the interrupted
        trial (a long traceback) muted; real failures are still logged by Optuna."""
        logger = logging.getLogger("optuna.study._optimize")
        not_interrupted = lambda record: self.signum is None  # noqa: E731
        logger.addFilter(not_interrupted)
        try:
            with stop_handlers(self.handler):
                yield self
        finally:
            logger.removeFilter(not_interrupted)


def _interrupted(trial):
    return bool(trial.user_attrs.get("interrupted"))


def make_objective(task, seed, interrupt, worker):
    """The trial function: ``worker`` (host, process id, sampler seed) is recorded on
    each trial; a trial stopped by the interrupt is marked so that it is not counted."""
    def measure(trial):
        recipe = task.suggest(trial, task.base_recipe)
        start = time.time()
        metrics = task.evaluate(recipe, seed)
        resources = [l for l in recipe.limits() if l.metric in RESOURCE_METRICS]
        for key, value in constraint_values(resources, metrics).items():
            trial.set_constraint(key, value)
        error = task.error(metrics, recipe)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("feasible", budget_holds(check_budget(resources, metrics)))
        trial.set_user_attr("budget_holds_on_validation",
                            budget_holds(check_budget(recipe.limits(), metrics)))
        trial.set_user_attr("seconds", round(time.time() - start, 1))
        return float(metrics["zlib_bytes"]), float(error)

    def objective(trial):
        interrupt.trial = trial
        try:
            trial.set_user_attr("worker", worker)
            values = measure(trial)
            if interrupt.signum is not None:  # swallowed on the way: the result is suspect
                raise interrupt.exception()
            return values
        except BaseException as err:
            if interrupt.caught(err):
                trial.set_user_attr("interrupted", True)
                trial.set_user_attr("fail_reason", "interrupted")
                raise interrupt.exception() from None
            # recorded, then Optuna marks the trial failed and the study goes on
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])
            raise
    return objective


def finished(study):
    """The trials that count toward N: complete or failed, not interrupted."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
            or (t.state.name == "FAIL" and not _interrupted(t))]


def feasible_front(trials):
    """The feasible trials no other feasible trial beats on both objectives, by size."""
    points = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("feasible")]
    front = [t for t in points if not any(
        o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
        for o in points)]
    return sorted(front, key=lambda t: t.values[0])


def describe_trial(trial):
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state.name != "COMPLETE":
        return f"trial {trial.number}: {params} -> {trial.state.name.lower()}: " \
               f"{trial.user_attrs.get('fail_reason', '')[:160]}"
    size, error = trial.values
    flag = "feasible" if trial.user_attrs.get("feasible") else "INFEASIBLE"
    return (f"trial {trial.number}: {params} -> {size:.0f} B, error {error:.4f}, {flag}, "
            f"{trial.user_attrs.get('seconds')} s")


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_callback(study, trial):
    front = feasible_front(finished(study))
    summary = ", ".join(f"{t.values[0]:.0f} B/{t.values[1]:.4f}" for t in front[:6])
    print(describe_trial(trial), flush=True)
    print(f"  feasible front ({len(front)}): {summary or 'none yet'}", flush=True)


def stop_at(target):
    """Stop once the study holds ``target`` finished trials (as ``finished`` counts them:
    Optuna's MaxTrialsCallback would count the interrupted ones too)."""
    def callback(study, trial):
        if len(finished(study)) >= target:
            study.stop()
    return callback


ORPHAN_POLL_S = 2.0


def stop_when_orphaned(parent, poll_s=ORPHAN_POLL_S):
    """A ``--workers`` helper stops itself as if sent SIGTERM once ``parent`` (the
    process that started it) is gone. A parent killed outright (SIGKILL, the OOM killer)
    forwards no signal, and the helper, in its own process group, would otherwise run
    its trials to the end alone. Gone = this process was re-parented."""
    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def start_helpers(task, args, interrupt):
    """``--workers``: N-1 more processes of this command on the same study. Each is in
    its own process group, so a Ctrl-C reaches this process only, which forwards it once.
    Their stderr is relayed until the search is stopping: then their own "interrupted"
    lines (or tracebacks, if they were still starting) would repeat this one's."""
    def relay(stream):
        for line in stream:
            if interrupt.signum is None:
                sys.stderr.write(line)
                sys.stderr.flush()
    relays = []
    for index in range(1, args.workers):
        helper = subprocess.Popen([sys.executable, task.script, *task.argv,
                                   "--search-worker", str(index),
                                   "--search-parent", str(os.getpid()),
                                   "--storage", storage_url(args, task.name)],
                                  stderr=subprocess.PIPE, text=True, process_group=0)
        interrupt.helpers.append(helper)
        relays.append(threading.Thread(target=relay, args=(helper.stderr,), daemon=True))
        relays[-1].start()
    return relays


def _fail_if_running(study, trial):
    """A trial the interrupt left RUNNING (it came between the objective and Optuna's
    bookkeeping) is marked interrupted and failed, or a resume would find it stale,
    fail it and count it."""
    states = _optuna().trial.TrialState
    if trial is not None and any(t.number == trial.number for t in study.get_trials(
            deepcopy=False, states=(states.RUNNING,))):
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=states.FAIL)


def run_trials(task, args, study):
    """Run trials until the study holds ``args.search`` finished ones (so the same
    command resumes an interrupted search); ``--workers`` processes share the study.
    Ctrl-C or SIGTERM stops this process and its helpers and raises KeyboardInterrupt
    (or Terminated) with a message: the interrupted trials do not count."""
    target = args.search
    if len(finished(study)) >= target:
        return
    seed = sampler_seed(args)
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "sampler_seed": seed}
    interrupt = Interrupt()
    relays = []
    with interrupt.installed():
        try:
            if args.search_parent:
                stop_when_orphaned(args.search_parent)
            if args.workers > 1 and not args.search_worker:
                relays = start_helpers(task, args, interrupt)
            study.optimize(make_objective(task, args.seed, interrupt, worker),
                           n_trials=target, catch=(Exception,),
                           callbacks=[stop_at(target), progress_callback],
                           gc_after_trial=True)
        except BaseException as err:
            if not interrupt.caught(err):
                raise
            _fail_if_running(study, interrupt.trial)
        finally:
            for helper in interrupt.helpers:
                helper.wait()
            for relay in relays:
                relay.join()
    if interrupt.signum is not None:
        kept = len(finished(study))
        raise interrupt.exception(
            f"the {kept} finished trial{'s are' if kept != 1 else ' is'} kept in the study; "
            "run the same command to resume")


def write_trials_csv(study, path):
    """Every trial: parameters, size, error, metrics, feasibility, time, failure."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    head, objectives = ["number", "state"], ["zlib_bytes", "error"]
    tail = ["feasible", "budget_holds_on_validation", "seconds", "fail_reason"]
    metric_keys = sorted({k for t in trials for k in t.user_attrs.get("metrics", {})
                          if not isinstance(t.user_attrs["metrics"][k], (dict, list))}
                         - {*head, *objectives, *tail})  # e.g. zlib_bytes: one column
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*head, *params, *objectives, *metric_keys, *tail])
    for t in trials:
        values = t.values if t.values else ("", "")
        metrics = t.user_attrs.get("metrics", {})
        writer.writerow([t.number, t.state.name, *(t.params.get(p, "") for p in params),
                         *values, *(metrics.get(k, "") for k in metric_keys),
                         t.user_attrs.get("feasible", ""),
                         t.user_attrs.get("budget_holds_on_validation", ""),
                         t.user_attrs.get("seconds", ""),
                         t.user_attrs.get("fail_reason", "")])
    artifacts.atomic_write_bytes(path, out.getvalue().encode())


def plot_front(task, study, path, max_bytes):
    """Error vs size: every trial, the feasible front, budget lines, markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    feasible = [t for t in trials if t.user_attrs.get("feasible")]
    infeasible = [t for t in trials if not t.user_attrs.get("feasible")]
    front = feasible_front(trials)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if infeasible:
        ax.scatter([t.values[0] for t in infeasible], [t.values[1] for t in infeasible],
                   marker="x", color="0.6", label="infeasible trial")
    if feasible:
        ax.scatter([t.values[0] for t in feasible], [t.values[1] for t in feasible],
                   color="tab:blue", label="feasible trial (size, latency)")
    if front:
        ax.step([t.values[0] for t in front], [t.values[1] for t in front], where="post",
                color="tab:red", lw=2, label="feasible Pareto front")
    ax.axvline(max_bytes, color="tab:orange", ls="--", label=f"size budget {max_bytes} B")
    ax.axhline(task.error_limit, color="tab:green", ls="--", label="error budget")
    for (label, size, error), marker in zip(task.markers, ("*", "^", "s")):
        if size is not None and error is not None:
            ax.scatter([size], [error], marker=marker, s=160, edgecolor="k", label=label,
                       zorder=5)
    ax.set_xlabel(".tflite.zlib bytes")
    ax.set_ylabel(task.error_label)
    ax.set_title(f"{task.name}: {len(trials)} trials, {len(feasible)} feasible")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    artifacts.atomic_write_bytes(path, buffer.getvalue())


def chosen_trial(study, number=None, max_bytes=None):
    """The trial to export: ``number``, else the feasible trial with the lowest error
    (ties: the smaller file), among those of at most ``max_bytes`` when given."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            raise UserError(f"the study has no completed trial {number}")
        return match[0]
    feasible = [t for t in trials if t.user_attrs.get("feasible")
                and (max_bytes is None or t.values[0] <= max_bytes)]
    if not feasible:
        raise UserError("the study has no feasible trial to export yet"
                        f"{f' of at most {max_bytes} B' if max_bytes else ''}; "
                        "run more trials")
    return min(feasible, key=lambda t: (t.values[1], t.values[0]))


def require_study(args, name):
    """Exporting without searching needs a study: check before anything is written
    (opening a missing SQLite study would create it)."""
    default_db = os.path.join(args.out_dir, "search", f"{name}.db")
    if not args.search and not args.storage and not os.path.exists(default_db):
        raise UserError(f"there is no study to export from ({default_db} is missing): "
                        "run --search N first")


def run(task, args):
    """Run or resume the search, write the CSV and the plot; return ``(recipe, info)``
    for ``--export-best`` / ``--export-trial`` (the trial's recipe, and what the run's JSON
    records about the trial), else None. Errors are UserErrors; an interrupt is raised
    as KeyboardInterrupt / Terminated with a message (see ``run_trials``)."""
    _optuna()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"--search needs Optuna and matplotlib: {INSTALL_HINT}") from None
    require_study(args, task.name)
    study = open_study(task, args)
    if not args.search and not args.search_worker:
        chosen_trial(study, args.export_trial, args.export_max_bytes)  # fail before writing
    if args.search:
        print(f"search {task.name}: {len(finished(study))} finished trials in the study, "
              f"target {args.search} (sampler seed {sampler_seed(args)})", flush=True)
        run_trials(task, args, study)
    if args.search_worker:
        return None
    folder = os.path.join(args.out_dir, "search")
    os.makedirs(folder, exist_ok=True)
    write_trials_csv(study, os.path.join(folder, f"{task.name}.csv"))
    plot_front(task, study, os.path.join(folder, f"{task.name}.png"),
               task.base_recipe.max_zlib_bytes)
    front = feasible_front(finished(study))
    print(f"\nsearch {task.name}: {len(finished(study))} trials; feasible front:")
    for t in front:
        print("  " + describe_trial(t))
    print(f"wrote {folder}/{task.name}.csv and .png")
    if not (args.export_best or args.export_trial is not None):
        return None
    trial = chosen_trial(study, args.export_trial, args.export_max_bytes)
    optuna = _optuna()
    recipe = task.suggest(optuna.trial.FixedTrial(trial.params), task.base_recipe)
    print(f"exporting trial {trial.number} (validation: {trial.values[0]:.0f} B, "
          f"error {trial.values[1]:.4f}); retraining, then one test evaluation", flush=True)
    return recipe, {"trial": trial.number, "study": task.name, "params": trial.params,
                    "validation_zlib_bytes": trial.values[0],
                    "validation_error": trial.values[1]}


def add_arguments(parser):
    """The search flags, shared by both scripts."""
    group = parser.add_argument_group("model search (needs requirements-search.txt)")
    group.add_argument("--search", type=cli.positive_int, metavar="N",
                       help="run a budget-aware Optuna search until the study holds N "
                            "finished trials (resumes an interrupted search)")
    group.add_argument("--storage", metavar="URL",
                       help="Optuna RDB storage URL shared by several hosts (default: "
                            "sqlite under OUT_DIR/search/)")
    group.add_argument("--workers", type=cli.positive_int, default=1,
                       help="processes running trials in parallel on this host")
    group.add_argument("--export-best", action="store_true",
                       help="retrain the lowest-error feasible trial and ship it as the "
                            "version's model (one test evaluation)")
    group.add_argument("--export-trial", type=cli.non_negative_int, metavar="N",
                       help="like --export-best, for trial number N")
    group.add_argument("--export-max-bytes", type=cli.positive_int, metavar="B",
                       help="with --export-best: only trials of at most B bytes "
                            "(a size target tighter than the budget)")
    group.add_argument("--search-worker", type=int, default=0, help=argparse.SUPPRESS)
    group.add_argument("--search-parent", type=int, default=0, help=argparse.SUPPRESS)


def fixed_knobs(args):
    """The recipe knobs the command line fixed: the search leaves them alone."""
    return {k for k in cli.RECIPE_KNOBS if getattr(args, k) is not None}


def wants_search(args):
    return bool(args.search or args.export_best or args.export_trial is not None)


def load_marker(path, error_fn, recipe):
    """``(bytes, error)`` of a shipped model's results JSON, or ``(None, None)``."""
    try:
        with open(path) as f:
            metrics = json.load(f)["metrics"]
        return metrics["zlib_bytes"], error_fn(metrics, recipe)
    except (OSError, KeyError, ValueError):
        return None, None

