"""The pipeline both scripts run, top to bottom: parse and check the command line,
load the data, train, convert, measure the .tflite, write the model with its JSON,
print the summary. Also the two other ways in: ``--evaluate`` (measure a given file,
write nothing) and ``--search`` (hand the version to the model search).

A task (``common/<task>/task.py``) supplies a ``Task``: the steps that are truly its
own (data, model, score) and declarations (summary columns, probes with their printed
lines, baselines, search space); its script supplies the version table. Nothing here
imports TensorFlow at import time: training, converting and measuring do, after
``common.import_tensorflow`` has loaded it quietly.
"""
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time

import common
from common import artifacts, cli, results, search
from common.budget import budget_holds, check_budget
from common.errors import EXIT_BUDGET_MISSED, EXIT_OK, UserError
from common.measuring import MeasureSettings, measure


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the summary table: its ``name``, the metric ``key`` it shows, and
    ``format``: a format spec for the value (``".2%"``), or a template over the
    metrics with the value first (``"{}/{clips}"``). A metric the run lacks, or
    None, shows as "-"."""
    name: str
    key: str
    format: str = ""

    def cell(self, metrics):
        value = metrics.get(self.key)
        if value is None:
            return "-"
        if "{" in self.format:
            return self.format.format(value, **metrics)
        return format(value, self.format) if self.format else value


@dataclasses.dataclass(frozen=True)
class Probe:
    """A measurement a task adds to its score, and what it prints.

    ``measure(runner, data, recipe, split, settings)`` -> ``(metrics, details)`` runs
    on the splits named in ``splits`` (None: every split that is measured with
    extras: test, search trials); ``lines(details, data)`` -> the summary's lines (it
    returns none when its details are missing). Either may be None.
    """
    name: str
    measure: object = None
    lines: object = None
    splits: tuple = ("test",)

    def runs_on(self, split):
        return self.measure is not None and (self.splits is None or split in self.splits)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A reference model trained and measured (on test) beside every training run:
    its JSON ``key``, its row's ``name``, ``recipe(recipe)`` -> the reference's recipe,
    and the ``note`` printed before it trains."""
    key: str
    name: str
    recipe: object
    note: str = ""


class Task:
    """What a task supplies to the pipeline: declarations, and eight functions (the
    flags it adds, its data, training, the metadata it writes into the .tflite, the
    inputs of a split, scoring, what its outputs mean, its JSON fields).

    Data: ``name`` ("forecast", "kws": the artifacts are ``<name>_<version>.*``),
    ``description`` (the top of --help), ``recipes`` ({version: recipe}; a recipe is
    a frozen dataclass with ``limits()``), ``examples`` (command lines for --help),
    ``columns`` (the summary table's, each a ``Column``), ``probes`` (``Probe``: the
    measurements beyond the score, each with its printed lines), ``baselines``
    (``Baseline``), ``classifier`` (outputs are class scores), ``search_space`` (a
    ``SearchSpace``, for --search and for choosing among --seeds by validation).
    """
    name = description = examples = ""
    classifier = False
    recipes = {}
    columns = ()
    probes = ()
    baselines = ()
    search_space = None

    def __init__(self, recipes=None, description=None, examples=None):
        """``recipes`` (the script's version table), ``description`` (the script's
        docstring: its first paragraph tops --help) and ``examples``; a task may give
        them as class attributes instead."""
        if recipes is not None:
            self.recipes = recipes
        if description is not None:
            self.description = description.split("\n\n")[0]
        if examples is not None:
            self.examples = examples

    def add_arguments(self, parser):
        """The script's own flags (declare their checks as argparse types)."""

    def load(self, args, recipe, evaluating=None):
        """The data, as the task's own object. ``evaluating`` is the ``ModelFile``
        under ``--evaluate`` (only the test split is needed then), else None."""
        raise NotImplementedError

    def train(self, recipe, data, seed, verbose):
        """``(model, tflite_bytes, fit_info)``: train, optimize and convert."""
        raise NotImplementedError

    def finish_model(self, tflite_bytes, data, recipe):
        """The bytes to ship (e.g. with metadata added): inference unchanged."""
        return tflite_bytes

    def inputs(self, data, recipe, split):
        """``(x, y)`` of ``split``: float model inputs, one per sample, and targets."""
        raise NotImplementedError

    def score(self, outputs, y, data):
        """``(metrics, details)`` of the float ``outputs`` against the targets ``y``:
        the task's figures (accuracy, MAE), and details for the JSON."""
        raise NotImplementedError

    def output_names(self, data):
        """What each output value means (for the C export)."""
        raise NotImplementedError

    def input_notes(self, data, recipe):
        """How a device makes the model's input from its raw readings, a line each
        (the C export's header): what the firmware must compute exactly as training
        did."""
        return []

    def describe(self, data, recipe):
        """Task-specific fields of the results JSON (data checksums, model I/O, ...)."""
        return {}

    def check_c_export(self, recipe):
        """Before any work: a UserError when --export-c could not write this
        version's C (e.g. a front end the C code does not reproduce)."""

    def c_bundle(self, stem, tflite_bytes):
        """``{file name: bytes}`` --export-c writes beside the model's C array (a
        keyword spotter: its front end, detector and host program)."""
        return {}


def header(task):
    return ["model"] + [column.name for column in task.columns]


def row(task, name, metrics):
    """One line of the summary table."""
    return [name] + [column.cell(metrics) for column in task.columns]


def probe_lines(task, details, data):
    """Every probe's printed lines, in the order the task declares them."""
    return [line for probe in task.probes if probe.lines
            for line in probe.lines(details, data)]


def baseline_rows(task, recipe, data, settings, verbose):
    """``({json_key: metrics}, rows)`` of the task's baselines, each trained with the
    run's seed and measured on the test split."""
    measured, rows = {}, []
    for baseline in task.baselines:
        print(baseline.note, flush=True)
        base_recipe = baseline.recipe(recipe)
        _, tflite_bytes, _ = task.train(base_recipe, data, settings.seed, verbose)
        measured[baseline.key], _ = measure(task, tflite_bytes, data, base_recipe, "test",
                                            settings)
        rows.append(row(task, baseline.name, measured[baseline.key]))
    return measured, rows


def parse_args(task, argv):
    parser = cli.base_parser(task.description, task.recipes, task.examples)
    task.add_arguments(parser)
    search.add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = tuple(sys.argv[1:] if argv is None else argv)
    args.started = time.time()  # the summary's loading time counts from here
    check_combinations(args)
    args.seeds = args.seeds or [args.seed]
    args.seed = args.seeds[0]
    cli.quiet_libraries(args.verbose)
    return args


def check_combinations(args):
    """Options that would be silently ignored together are an error instead."""
    if args.evaluate:
        ignored = [f"--{name.replace('_', '-')}" for name in
                   cli.RECIPE_KNOBS + ("seeds", "search", "export_trial")
                   if getattr(args, name) is not None] + (["--export-best"]
                                                          if args.export_best else []) \
            + (["--force"] if getattr(args, "force", False) else [])
        if ignored:
            raise UserError(f"--evaluate measures a given model: {', '.join(ignored)} "
                            "would be ignored")
    if args.export_max_bytes is not None and not args.export_best:
        raise UserError("--export-max-bytes goes with --export-best")


def resolve_recipe(recipes, args):
    """The version's recipe with the command line's --epochs/--alpha/--sparsity
    applied, and its device budgets tightened (never loosened) by
    --max-flash-bytes/--max-arena-bytes."""
    recipe = recipes[args.version]
    overrides = {name: getattr(args, name) for name in cli.RECIPE_KNOBS
                 if getattr(args, name) is not None}
    for name in cli.BUDGET_OVERRIDES:
        asked, own = getattr(args, name), getattr(recipe, name)
        if asked is not None:
            overrides[name] = asked if own is None else min(asked, own)
    return dataclasses.replace(recipe, **overrides)


def resolve_micro(args, recipe):
    """Whether to run the TFLM checks: as asked, else when tflite-micro is installed.
    They are needed for an arena budget and for --export-c (the arena size)."""
    from common.tflite import micro
    needed = [why for why, yes in (("the arena budget", recipe.max_arena_bytes),
                                   ("--export-c", args.export_c)) if yes]
    if args.micro is None:
        args.micro = micro.available() or bool(needed)
    if needed and not args.micro:
        raise UserError(f"{' and '.join(needed)} need{'s' if len(needed) == 1 else ''} "
                        "the TFLM checks: drop --no-micro")
    if args.micro and not micro.available():
        raise UserError(f"{'--micro' if not needed else ' and '.join(needed)} needs "
                        f"TensorFlow Lite Micro: {micro.INSTALL_HINT}")


def main(task, argv=None):
    """The whole command: returns the exit code (UserErrors propagate to run_main)."""
    args = parse_args(task, argv)
    recipe = resolve_recipe(task.recipes, args)
    resolve_micro(args, recipe)
    if args.export_c and not args.evaluate:  # refused before training, not after
        task.check_c_export(recipe)
    if args.evaluate:
        return evaluate(task, args, recipe)
    artifacts.check_output_dir(args.out_dir)
    if search.wants_search(args):
        search.require_study(args, f"{task.name}_{args.version}")
    data = task.load(args, recipe)
    search_info = None
    if search.wants_search(args):
        chosen = search.run(search_task(task, args, recipe, data), args)
        if chosen is None:
            return EXIT_OK
        recipe, search_info = chosen
    return train_and_ship(task, args, recipe, data, search_info)


@dataclasses.dataclass
class SeedRun:
    """One seed's trained model and its figures."""
    seed: int
    model: object
    tflite_bytes: bytes
    compressed: bytes
    fit_info: dict
    validation_error: float
    metrics: dict
    details: dict


def train_seed(task, args, recipe, data, seed):
    """Train one seed; measure its .tflite on validation (for choosing) and test."""
    start = time.time()
    print(f"{task.name} {args.version}: training seed {seed} ...", flush=True)
    model, tflite_bytes, fit_info = task.train(recipe, data, seed, not args.quiet)
    tflite_bytes = task.finish_model(tflite_bytes, data, recipe)
    train_seconds = round(time.time() - start, 1)
    compressed = artifacts.compress(tflite_bytes)
    sizes = artifacts.sizes(tflite_bytes, compressed)
    settings = MeasureSettings.from_args(args)
    val_metrics, _ = measure(task, tflite_bytes, data, recipe, "val",
                             settings.score_only(), sizes)
    metrics, details = measure(task, tflite_bytes, data, recipe, "test", settings, sizes)
    metrics.update(train_seconds=train_seconds)
    return SeedRun(seed, model, tflite_bytes, compressed, fit_info,
                   task.search_space.error(val_metrics, recipe), metrics, details)


def seed_summary(runs):
    """Mean and (population) standard deviation over seeds of every metric that is
    a number in every seed (a latency of no hit is None)."""
    keys = [k for k in runs[0].metrics if not k.endswith("clips") and all(
        isinstance(run.metrics.get(k), (int, float)) for run in runs)]
    values = {k: [run.metrics[k] for run in runs] for k in keys}
    return {k: {"mean": round(statistics.fmean(v), 4),
                "std": round(statistics.pstdev(v), 4)} for k, v in values.items()}


def train_and_ship(task, args, recipe, data, search_info=None):
    """Train every seed, ship the one with the lowest validation error (the test
    split never picks), report each seed and the mean and spread."""
    common.import_tensorflow()
    loaded = time.time()
    baselines, rows = baseline_rows(task, recipe, data, MeasureSettings.from_args(args),
                                    not args.quiet)
    baselines_done = time.time()
    runs = [train_seed(task, args, recipe, data, seed) for seed in args.seeds]
    seeds_done = time.time()
    best = best_run(runs)
    metrics, details = best.metrics, best.details
    tflite_bytes, compressed = best.tflite_bytes, best.compressed
    verdicts = check_budget(recipe.limits(), metrics)
    record = results_record(task, args, recipe, data, runs, baselines, search_info)
    stem = f"{task.name}_{args.version}"
    files = {f"{stem}.tflite.zlib": compressed, f"{stem}.json": artifacts.json_bytes(record),
             **c_files(task, args, recipe, stem, tflite_bytes, metrics, details, data)}
    written, ship_lines = ship(args, recipe, stem, files, metrics, verdicts)
    label = f"{recipe.quantization}{', pruned' if recipe.sparsity else ''}"
    for run in runs:
        name = (f"seed {run.seed}{', shipped' if run is best else ''} ({label})"
                if len(runs) > 1 else f"shipped ({label})")
        rows.append(row(task, name, run.metrics))
    return report(f"{task.name} {args.version}: test split, measured on the .tflite",
                  header(task), rows, verdicts,
                  probe_lines(task, details, data) + micro_lines(metrics, details)
                  + seed_lines(runs, best, record) + ship_lines
                  + [f"{'wrote ' + ', '.join(written) if written else 'wrote nothing'}; "
                     + time_line(getattr(args, "started", None), loaded, baselines_done,
                                 seeds_done, runs)])


def seed_lines(runs, best, record):
    """With --seeds, the mean and spread over the seeds and which one shipped."""
    if len(runs) == 1:
        return []
    return ["", f"over {len(runs)} seeds (mean ± std): " + ", ".join(
        f"{k} {v['mean']:g} ± {v['std']:g}" for k, v in record["seed_summary"].items()),
        f"shipped: seed {best.seed}, the lowest validation error "
        f"({best.validation_error:.4f}); the budget holds for "
        f"{sum(s['budget_holds'] for s in record['seeds'])} of {len(runs)} seeds"]


def best_run(runs):
    """The seed that ships: the lowest validation error (the test split never picks)."""
    return min(runs, key=lambda run: run.validation_error)


def results_record(task, args, recipe, data, runs, baselines, search_info):
    """The results JSON of a training run, from its parts in one place
    (``results.record``: a key two parts write is an error, not an overwrite)."""
    from common.tflite import optimize
    best = best_run(runs)
    verdicts = check_budget(recipe.limits(), best.metrics)
    seeds = {}
    if len(runs) > 1:
        seeds = {"seeds": [
            {"seed": run.seed, "validation_error": run.validation_error,
             "metrics": run.metrics,
             "budget_holds": budget_holds(check_budget(recipe.limits(), run.metrics)),
             **({"noise": run.details["noise"]} if "noise" in run.details else {})}
            for run in runs], "seed_summary": seed_summary(runs)}
    return results.record(
        ("the run", {"task": task.name, "version": args.version, "seed": best.seed,
                     "recipe": dataclasses.asdict(recipe)}),
        ("the task's describe", task.describe(data, recipe)),
        ("the model", {"sparsity": optimize.weight_sparsity(best.model),
                       "tflite_sparsity": optimize.tflite_weight_sparsity(
                           best.tflite_bytes),
                       "weight_types": optimize.weight_types(best.tflite_bytes),
                       "fit": best.fit_info}),
        ("the baselines", baselines),
        ("the search", {"search": search_info}),
        ("the measured details", best.details),
        ("the verdicts", {"metrics": best.metrics, "budget": verdicts,
                          "budget_holds": budget_holds(verdicts),
                          "created": datetime.datetime.now(datetime.timezone.utc)
                          .isoformat(timespec="seconds"),
                          "libraries": artifacts.library_versions()}),
        ("the seeds", seeds),
        # the pair's bond: the JSON names the .tflite.zlib it belongs to
        ("the file", {"model_sha256": artifacts.sha256_bytes(best.compressed)}))


def time_line(started, loaded, baselines_done, seeds_done, runs):
    """Where the run's time went, from the ``time.time()`` marks of
    ``train_and_ship``: loading (start-up, data, TensorFlow's import), the baselines,
    training (each seed's ``train_seconds``), measuring the seeds' .tflite files
    (validation, test, latency, noise), writing the results."""
    training = sum(r.metrics["train_seconds"] for r in runs)
    now = time.time()
    parts = [("loading", loaded - started if started else None),
             ("baselines", baselines_done - loaded),
             (f"training ({len(runs)} seeds)" if len(runs) > 1 else "training", training),
             ("measuring", max(0.0, seeds_done - baselines_done - training)),
             ("writing", now - seeds_done)]
    shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in parts
                      if seconds is not None and (seconds >= 0.05 or name != "baselines"))
    return f"{now - (started or loaded):.1f} s in all: {shown}"


def ship(args, recipe, stem, files, metrics, verdicts):
    """Publish a training run's files: ``(paths written, summary lines)``. A model in
    --out-dir that meets its budget is never replaced by one that misses it (a trial
    run into the default models/ would silently replace the shipped model) unless
    --force: the old pair is kept, nothing is written, and the line says so with both
    figures. Whenever a model is replaced, the line compares the budget's figures."""
    model_path = os.path.join(args.out_dir, f"{stem}.tflite.zlib")
    old = {}

    def guard():  # under publish's lock: what it compares is what it replaces
        if not os.path.isfile(model_path):
            return True
        old.update(previous=True, **previous_result(os.path.join(args.out_dir,
                                                                  f"{stem}.json")))
        worse = old.get("budget_holds") and not budget_holds(verdicts)
        return getattr(args, "force", False) or not worse

    written = artifacts.publish(args.out_dir, files, guard)
    if not old:
        return written, []
    names = dict.fromkeys(limit.metric for limit in recipe.limits())
    figures = lambda m: "-" if m is None else f"{m:g}"  # noqa: E731
    compared = ", ".join(f"{name} {figures(old.get('metrics', {}).get(name))} -> "
                         f"{figures(metrics.get(name))}" for name in names)
    held = lambda holds: "held" if holds else "MISSED"  # noqa: E731
    if not written:
        return [], [f"kept {model_path} and its JSON: their budget holds, this run's "
                    f"model misses it ({compared}); --force replaces them"]
    was = ("its JSON unreadable" if "budget_holds" not in old else
           f"budget {held(old['budget_holds'])} -> {held(budget_holds(verdicts))}")
    return written, [f"replaced {model_path} ({was}): {compared}"]


def previous_result(json_path):
    """The ``metrics`` and ``budget_holds`` a results JSON records ({} when it is
    missing or unreadable)."""
    try:
        with open(json_path, "rb") as f:
            recorded = json.loads(f.read(artifacts.MAX_MODEL_BYTES))
        metrics = {k: v for k, v in recorded["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return {"metrics": metrics, "budget_holds": bool(recorded["budget_holds"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def c_files(task, args, recipe, stem, tflite_bytes, metrics, details, data, bundle=None):
    """The model as C source for a TFLM firmware when --export-c asks, else nothing;
    with the task's own files (``bundle``, made here when not given)."""
    if not args.export_c:
        return {}
    from common.tflite import c_export
    io = details["io"]
    return {**c_export.c_source(stem, tflite_bytes, metrics["arena_bytes"],
                                io["input_shape"], io["input_quantization"],
                                io["output_quantization"], task.output_names(data),
                                task.input_notes(data, recipe)),
            **(task.c_bundle(stem, tflite_bytes) if bundle is None else bundle)}


def micro_lines(metrics, details):
    """The microcontroller figures, when TFLM ran: flash, arena, ops, agreement."""
    if "micro" not in details:
        return []
    ops = details["micro"]["ops"]
    counted = ", ".join(f"{op} x{ops.count(op)}" if ops.count(op) > 1 else op
                        for op in dict.fromkeys(ops))
    agree = details["micro"]["agreement"]
    under = ", ".join(f"{k[len('micro_'):]} {v}" for k, v in metrics.items()
                      if k.startswith("micro_"))
    labels = (f", identical labels {agree['identical_labels']:.2%}"
              if "identical_labels" in agree else "")
    return ["", f"TensorFlow Lite Micro: flash {metrics['tflite_bytes']} B (the raw "
                f".tflite), tensor arena {metrics['arena_bytes']} B; ops: {counted}",
            f"  under TFLM: {under}; vs the desktop interpreter: identical outputs "
            f"{agree['identical_outputs']:.2%}{labels}, largest difference "
            f"{agree['max_abs_difference']:.3g}"]


def evaluate(task, args, recipe):
    """Measure a given model file on the test split and judge it; write nothing but
    the C source --export-c asks for."""
    if args.export_c:
        artifacts.check_output_dir(args.out_dir)
    model = artifacts.read_model(args.evaluate)
    warning = artifacts.pair_warning(model)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stem = os.path.basename(args.evaluate).split(".")[0]
    # made (or refused) before the measurement, not after it
    bundle = task.c_bundle(stem, model.tflite_bytes) if args.export_c else None
    data = task.load(args, recipe, evaluating=model)
    metrics, details = measure(task, model.tflite_bytes, data, recipe, "test",
                               MeasureSettings.from_args(args), model.sizes())
    size_note = ("size verdict on the file's own bytes" if model.compressed else
                 f"raw .tflite ({metrics['tflite_bytes']} B): the size verdict is on "
                 f"its zlib size ({metrics['zlib_bytes']} B), the .tflite.zlib the "
                 "pipeline would ship")
    files = c_files(task, args, recipe, stem, model.tflite_bytes, metrics, details,
                    data, bundle)
    if files:
        artifacts.publish(args.out_dir, files)
        size_note += f"; wrote {', '.join(os.path.join(args.out_dir, f) for f in files)}"
    return report(f"{task.name} {args.version}: {args.evaluate} on the test split",
                  header(task), [row(task, os.path.basename(args.evaluate), metrics)],
                  check_budget(recipe.limits(), metrics),
                  probe_lines(task, details, data) + micro_lines(metrics, details)
                  + [size_note])


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A task's search space and objective, for ``--search``.

    ``knobs(trial, base)`` suggests the task's own recipe fields; ``ranges`` gives
    the range of each knob the command line can fix (``--alpha``, ``--sparsity``,
    ``--epochs``; an upper bound None means the recipe's value), suggested unless
    fixed; the recipe fields named in ``epoch_fields`` are epoch numbers, scaled
    with the suggested epoch count. ``params(recipe)`` is the recipe in the
    search's terms (trial 0 of a new study is the shipped recipe).
    ``error(metrics, recipe)`` is the error objective, < ``error_limit(recipe)``
    when the error budget holds. ``reference`` maps a version to the published
    ``(zlib bytes, metrics)`` drawn on the plot.
    """
    knobs: object
    ranges: dict
    epoch_fields: tuple
    params: object
    error: object
    error_label: str
    error_limit: object
    reference: dict

    def suggest(self, trial, base, fixed):
        knobs = self.knobs(trial, base)
        for name, (low, high) in self.ranges.items():
            if name in fixed:
                continue
            if name == "epochs":
                knobs[name] = trial.suggest_int(name, low, high or base.epochs)
            else:
                knobs[name] = trial.suggest_float(name, low, high)
        epochs = knobs.get("epochs", base.epochs)
        for field in self.epoch_fields:
            knobs[field] = tuple(e * epochs // base.epochs for e in getattr(base, field))
        return dataclasses.replace(base, **knobs)


def search_task(task, args, recipe, data):
    """The version as the generic search sees it: trials train on the training split
    and are measured on the validation split only."""
    space = task.search_space
    fixed = search.fixed_knobs(args)
    settings = MeasureSettings.from_args(args).for_search()

    def evaluate(trial_recipe, seed):
        _, tflite_bytes, _ = task.train(trial_recipe, data, seed, verbose=False)
        return measure(task, tflite_bytes, data, trial_recipe, "val", settings)[0]

    name = f"{task.name}_{args.version}"
    shipped = os.path.join(args.out_dir, f"{name}.json")
    ref_bytes, ref_metrics = space.reference.get(args.version, (None, None))
    return search.SearchTask(
        name=name, base_recipe=recipe,
        suggest=lambda trial, base: space.suggest(trial, base, fixed), evaluate=evaluate,
        error=space.error, error_label=space.error_label,
        error_limit=space.error_limit(recipe), script=os.path.abspath(sys.argv[0]),
        argv=args.argv,
        base_params={k: v for k, v in space.params(recipe).items() if k not in fixed},
        markers=(("shipped model (test split)",
                  *search.load_marker(shipped, space.error, recipe)),
                 ("reference (published, test)", ref_bytes,
                  ref_metrics and space.error(ref_metrics, recipe))))


def verdict_rows(verdicts):
    return [[v["limit"], "-" if v["measured"] is None else f"{v['measured']:g}",
             "pass" if v["ok"] else "FAIL"] for v in verdicts]


def report(title, header, rows, verdicts, extra_lines=()):
    """Print the final summary: measured rows, every budget verdict, extra lines;
    return the exit code."""
    print(f"\n== {title}")
    print(cli.format_table(header, rows))
    print()
    print(cli.format_table(["budget", "measured", "verdict"], verdict_rows(verdicts)))
    for line in extra_lines:
        print(line)
    holds = budget_holds(verdicts)
    print(f"budget {'holds' if holds else 'MISSED'}")
    sys.stdout.flush()
    return EXIT_OK if holds else EXIT_BUDGET_MISSED
