"""Command-line conventions shared by both training scripts: the parser (every
argument checked where it is declared, so validation happens before anything heavy
is imported), one-line errors, signals, and the plain-text tables.

Exit codes: see ``common.errors``.
"""
import argparse
import math
import os
import sys
import warnings

import common
from common import artifacts
from common import progress
from common.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated,
                           UserError, pending_stop_or, raise_pending_stop, stop_handlers)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError: one ``error:`` line, exit 2."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        """Parse; ``--quiet`` also silences the progress lines (``common.progress``,
        process-wide like ``quiet_libraries``'s switch)."""
        parsed = super().parse_args(args, namespace)
        progress.set_quiet(getattr(parsed, "quiet", False))
        return parsed


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse ``type`` that parses ``kind`` and checks it lies in the range."""
    def parse(text):
        try:
            value = kind(text)
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a finite number'}"
            ) from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{text} is outside {left}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{right}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, low=1)
non_negative_int = _number(int, low=0)
MAX_SEED = 2 ** 32 - 1  # numpy's and TensorFlow's seeds are 32-bit
seed_number = _number(int, low=0, high=MAX_SEED)
non_negative_float = _number(float, low=0.0)
positive_float = _number(float, low=0.0, low_open=True)
probability = _number(float, low=0.0, high=1.0)
hop_seconds = _number(float, low=0.0, high=1.0, low_open=True)
def folder_name(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name")
    return text


def seed_list(text):
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers") from None
    if not all(0 <= seed <= MAX_SEED for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct, in "
                                         f"[0, {MAX_SEED}]")
    return seeds


width_multiplier = _number(float, low=0.0, high=4.0, low_open=True)
sparsity_fraction = _number(float, low=0.0, high=1.0, high_open=True)


# recipe fields the command line can set: the search's knobs, and the device budgets
RECIPE_KNOBS = ("epochs", "alpha", "sparsity")
BUDGET_OVERRIDES = ("max_flash_bytes", "max_arena_bytes")


EXIT_STATUS_HELP = """\
exit status: 0 the model meets its budget; 2 bad input; 3 over budget (written, unless
it would replace a model that meets it: see --force); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM).
"""


def base_parser(description, recipes, examples=""):
    """The parser both scripts share; each script adds its own flags after."""
    parser = Parser(description=description,
                    epilog=EXIT_STATUS_HELP + (f"\nexamples:\n{examples}" if examples else ""),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", required=True, choices=sorted(recipes),
                        help="which recipe and budget to build (see the README's table)")
    parser.add_argument("--data-dir", default="data",
                        help="where the dataset is, or is downloaded to (default: data)")
    parser.add_argument("--out-dir", default="models", type=folder_name,
                        help="where the .tflite.zlib and .json are written (default: "
                             "models; created only when there is something to write)")
    parser.add_argument("--force", action="store_true",
                        help="replace the model in --out-dir even when it meets its "
                             "budget and this run's misses it (without --force that "
                             "model and its JSON are kept, nothing is written, exit 3)")
    parser.add_argument("--seed", type=seed_number, default=0,
                        help="random seed (default: 0)")
    parser.add_argument("--seeds", type=seed_list, metavar="S,S,...",
                        help="train one model per seed, report every metric's mean and "
                             "standard deviation, and ship the seed with the lowest "
                             "validation error (overrides --seed)")
    parser.add_argument("--epochs", type=positive_int, help="override the recipe's epoch count")
    parser.add_argument("--alpha", type=width_multiplier,
                        help="override the recipe's width multiplier, in (0, 4]")
    parser.add_argument("--sparsity", type=sparsity_fraction,
                        help="override the recipe's final pruning sparsity, in [0, 1) "
                             "(0 = no pruning)")
    parser.add_argument("--evaluate", metavar="PATH",
                        help="re-measure an existing .tflite or .tflite.zlib on the test "
                             "split and check it against the version's budget; no "
                             "training, nothing written. The size verdict is on the "
                             "bytes of PATH (for a raw .tflite: on its zlib size, what "
                             "the pipeline would ship)")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading when the dataset is missing")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up logs and warnings")
    device = parser.add_argument_group(
        "microcontroller checks (need requirements-micro.txt)")
    device.add_argument("--micro", action=argparse.BooleanOptionalAction,
                        help="also run the .tflite in TensorFlow Lite Micro: accuracy or "
                             "MAE under TFLM, agreement with the desktop interpreter, "
                             "tensor arena, ops (default: on when tflite-micro is "
                             "installed)")
    device.add_argument("--max-flash-bytes", type=positive_int, metavar="B",
                        help="add (or tighten) a budget on the raw .tflite (flash) bytes")
    device.add_argument("--max-arena-bytes", type=positive_int, metavar="B",
                        help="add (or tighten) a budget on TFLM's tensor arena bytes "
                             "(with --search: find the best model that fits a "
                             "microcontroller's RAM)")
    device.add_argument("--export-c", action="store_true",
                        help="also write OUT_DIR/<model>_model_data.{h,cc} (C++17): the "
                             "model as a byte array for a TFLM firmware, its arena size, "
                             "input quantization and output names; for a keyword "
                             "spotter also its front end, detector and a host program "
                             "in C99 (docs/c_bundle.md)")
    return parser


def quiet_libraries(verbose):
    """Hide the libraries' own chatter unless ``verbose``: TensorFlow's C++ INFO and
    WARNING logs, and the Python warnings raised inside TensorFlow, tf_keras, tfmot
    and absl (deprecation notices about their own internals). Warnings from any other
    code stay visible. TensorFlow's start-up lines are handled by
    ``common.native_stderr_hidden``."""
    common.set_quiet(not verbose)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings(
        "ignore", module=r"(tensorflow|tf_keras|tensorflow_model_optimization|absl|keras)"
                         r"(\.|$)")


class SafeStream:
    """``sys.stdout`` or ``sys.stderr`` that never raises: the run's results do not
    depend on anyone reading them. The first write that fails (a pipe closed by
    ``| head -1``, a descriptor closed by ``>&-``, a full disk) points the descriptor
    at /dev/null, so buffered and native writes drain harmlessly, says so in one line
    on stderr (for stdout), and every later write is dropped."""

    def __init__(self, stream, fd):
        self.stream, self.fd, self.broken = stream, fd, False

    def write(self, text):
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError, AttributeError) as err:  # None: closed at start
                self._give_up(err)
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError, AttributeError) as err:
                self._give_up(err)

    def isatty(self):
        return not self.broken and self.stream is not None and self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def _give_up(self, err):
        self.broken = True
        _to_devnull(self.fd)
        try:
            self.stream.flush()  # what the buffer holds goes to /dev/null now
        except (OSError, ValueError, AttributeError):
            pass
        if self.fd == 1:
            why = getattr(err, "strerror", None) or "closed"
            print(f"warning: stdout cannot be written ({why}); the run goes on without "
                  "printing", file=sys.stderr, flush=True)


def _to_devnull(fd):
    """Point ``fd`` at /dev/null (also when it is closed: a later open would take the
    number, and native code's printf would write into that file)."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _guarded_streams():
    """Wrap stdout and stderr in ``SafeStream`` (a descriptor closed when Python
    started is pointed at /dev/null first); returns the streams to put back."""
    saved = sys.stdout, sys.stderr
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if stream is None:
            try:
                os.fstat(fd)
            except OSError:
                _to_devnull(fd)
        if not isinstance(stream, SafeStream):
            setattr(sys, name, SafeStream(stream, fd))
    return saved


def run_main(main, argv=None):
    """Run ``main(argv)``; a UserError becomes one stderr line and exit 2, Ctrl-C exit
    130 and SIGTERM exit 143, each with one line saying what was kept (the
    interrupt's message, else the files published) or that nothing was written. A
    signal whose exception library code lost (``errors.stop_on_signal``) is reported
    the same way: through the error it turned into, or at the end of the run. A
    signal ignored when the run starts stays ignored (a script's background job
    ignores Ctrl-C). Output that cannot be written (see ``SafeStream``) changes
    neither the run nor its exit code."""
    saved = _guarded_streams()
    artifacts.WRITTEN.clear()
    try:
        with stop_handlers():
            try:
                code = main(argv)
                raise_pending_stop()
            except KeyboardInterrupt as err:  # Terminated included
                code = _report_stop(err)
            except Exception as err:
                stop = pending_stop_or(err)
                if isinstance(stop, KeyboardInterrupt):
                    code = _report_stop(stop)
                elif isinstance(err, UserError):
                    print(f"error: {err}", file=sys.stderr)
                    code = EXIT_BAD_INPUT
                else:
                    raise
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        sys.stdout, sys.stderr = saved
    sys.exit(code)


def _report_stop(err):
    """The one line for a Ctrl-C or SIGTERM (``err``), and its exit code."""
    terminated = isinstance(err, Terminated)
    kept = (f"wrote {', '.join(artifacts.WRITTEN)} (the summary is incomplete)"
            if artifacts.WRITTEN else "nothing was written")
    print(f"error: {'terminated' if terminated else 'interrupted'}; {str(err) or kept}",
          file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def format_table(header, rows):
    """A plain-text table with aligned columns (every cell is str()-ed)."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
