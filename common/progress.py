"""One updating line of progress on stdout for the long steps (KWS feature
extraction, the noise report): on a terminal, rewritten in place with ``\\r`` at
most every ``INTERVAL`` seconds, then replaced by the step's closing line, so it
shows one line per step; elsewhere (a log file, a pipe) a plain line at most every
``LOG_INTERVAL`` seconds, since a file keeps every ``\\r`` update on one line.

``--quiet`` silences the updates (the closing lines stay: they are results): the
command line calls ``set_quiet`` (``cli.Parser.parse_args``), process-wide like the
TensorFlow log switch in ``common``.
"""
import sys
import time

INTERVAL = 1.0  # seconds between two updates of the line
LOG_INTERVAL = 30.0  # seconds between two progress lines when stdout is no terminal

_quiet = False


def set_quiet(quiet):
    global _quiet
    _quiet = bool(quiet)


class Line:
    """``Line("mfcc features", total)``; call ``advance()`` per item done, and
    ``finish(text)`` at the end (``text`` None: just clear the line)."""

    def __init__(self, label, total):
        self.label, self.total, self.done = label, max(1, total), 0
        self._shown_at = None  # time.monotonic() of the last update shown
        self._width = 0        # characters of the update on screen (0: none)
        self._terminal = on_terminal()

    def advance(self, count=1):
        self.done += count
        now = time.monotonic()
        if _quiet or (self._shown_at is not None and now - self._shown_at <
                      (INTERVAL if self._terminal else LOG_INTERVAL)):
            return
        self._shown_at = now
        text = f"{self.label}: {self.done}/{self.total} ({self.done / self.total:.0%})"
        if not self._terminal:
            print(text, flush=True)
            return
        sys.stdout.write("\r" + text.ljust(self._width))
        sys.stdout.flush()
        self._width = len(text)

    def finish(self, text=None):
        if self._width:
            sys.stdout.write("\r" + " " * self._width + "\r")
            self._width = 0
        if text is not None:
            print(text)
        sys.stdout.flush()


def on_terminal():
    """Whether stdout is a terminal (one redrawn line) rather than a file or a pipe
    (plain lines): every progress display asks here."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False
