"""The errors and exit codes every layer may use (no imports: safe anywhere).

Exit codes: 0 the model meets its budget, 2 bad input or usage, 3 the model was
written but misses its budget, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_BUDGET_MISSED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class UserError(Exception):
    """A problem with the user's input or environment: reported as one line on
    stderr, exit code 2, nothing new written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit 143 instead of 130). A ``KeyboardInterrupt``
    (or this) raised with a message says what was kept; without one, nothing was
    written."""
