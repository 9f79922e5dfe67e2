"""Command-line conventions shared by both training scripts (exit codes: see
``common.errors``)."""
import argparse
import sys
import warnings

from common.errors import EXIT_BAD_INPUT, EXIT_BUDGET_MISSED, EXIT_OK, UserError  # noqa: F401


def base_parser(description, recipes, epilog=""):
    """The argparse parser both scripts share; script-specific flags are added after."""
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", required=True, choices=sorted(recipes),
                        help="which recipe and budget to build (see the README's table)")
    parser.add_argument("--data-dir", default="data",
                        help="where the dataset is, or is downloaded to (default: data)")
    parser.add_argument("--out-dir", default="models",
                        help="where the .tflite.zlib and .json are written (default: models)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--alpha", type=float, help="override the recipe's width multiplier")
    parser.add_argument("--sparsity", type=float,
                        help="override the recipe's final pruning sparsity (0 = no pruning)")
    parser.add_argument("--evaluate", metavar="PATH",
                        help="re-measure an existing .tflite or .tflite.zlib on the test "
                             "split and check it against the version's budget; no training")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading when the dataset is missing")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return parser


def check_overrides(args):
    """Validate the numeric overrides early, with messages that say what is allowed."""
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.alpha is not None and not 0 < args.alpha <= 4:
        raise UserError(f"--alpha must be in (0, 4], got {args.alpha}")
    if args.sparsity is not None and not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")


def run_main(main, argv=None):
    """Run ``main(argv)`` and turn a UserError into one stderr line and exit code 2."""
    warnings.filterwarnings("ignore")
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        code = 130
    sys.exit(code)


def format_table(header, rows):
    """A plain-text table with aligned columns (every cell is str()-ed)."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
