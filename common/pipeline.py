"""The steps every training script ends with: resolve the recipe, measure the
shipped bytes, check the budget, write the artifacts, print the summary."""
import dataclasses
import datetime
import sys

from common import artifacts
from common.budget import budget_holds, check_budget
from common.cli import EXIT_BUDGET_MISSED, EXIT_OK, check_overrides, format_table


def resolve_recipe(recipes, args):
    """The version's recipe with the command line's --epochs/--alpha/--sparsity applied."""
    check_overrides(args)
    overrides = {name: getattr(args, name) for name in ("epochs", "alpha", "sparsity")
                 if getattr(args, name) is not None}
    return dataclasses.replace(recipes[args.version], **overrides)


def size_metrics(tflite_bytes):
    """Raw and zlib byte counts; ``zlib_bytes`` is the shipped file's size."""
    compressed = artifacts.compress(tflite_bytes)
    return compressed, {"tflite_bytes": len(tflite_bytes), "zlib_bytes": len(compressed)}


def verdict_rows(verdicts):
    return [[v["limit"], "-" if v["measured"] is None else f"{v['measured']:g}",
             "pass" if v["ok"] else "FAIL"] for v in verdicts]


def report(title, metric_header, metric_rows, verdicts, extra_lines=()):
    """Print the final summary table: measured rows, then every budget verdict."""
    print(f"\n== {title}")
    print(format_table(metric_header, metric_rows))
    print()
    print(format_table(["budget", "measured", "verdict"], verdict_rows(verdicts)))
    for line in extra_lines:
        print(line)
    holds = budget_holds(verdicts)
    print(f"budget {'holds' if holds else 'MISSED'}")
    sys.stdout.flush()
    return EXIT_OK if holds else EXIT_BUDGET_MISSED


def finish_run(out_dir, stem, compressed, metrics, limits, results):
    """Check ``metrics`` against ``limits``, add the verdicts to ``results`` and write
    the model and its JSON. Returns the verdicts."""
    verdicts = check_budget(limits, metrics)
    results.update({
        "metrics": metrics,
        "budget": verdicts,
        "budget_holds": budget_holds(verdicts),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "libraries": artifacts.library_versions(),
    })
    artifacts.write_model_and_results(out_dir, stem, compressed, results)
    return verdicts
