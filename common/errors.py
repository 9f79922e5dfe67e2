"""The errors, exit codes and signal handling every layer may use (standard library
only: safe anywhere).

Exit codes: 0 the model meets its budget, 2 bad input or usage, 3 the model was
written but misses its budget, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""
import contextlib
import signal
import threading

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


# The stop a signal asked for and no one has reported yet (see ``stop_on_signal``).
_PENDING_STOP = []
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signal(signum, frame):
    """The SIGINT and SIGTERM handler of the scripts: raise ``KeyboardInterrupt`` (or
    ``Terminated``) and remember it until ``forget_stop``. Raised inside library
    code, the exception can be lost: TensorFlow's C layer turns it into a
    SystemError that some caller swallows, and the run would go on to finish and exit
    0. ``raise_pending_stop`` at the next safe point (each training batch, before any
    file is written, at the end of the run) raises it again."""
    raise remember_stop(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())


def remember_stop(stop):
    """Remember ``stop`` (the first one only) for ``raise_pending_stop``; returns it."""
    if not _PENDING_STOP:
        _PENDING_STOP.append(stop)
    return stop


def raise_pending_stop():
    """Raise the stop a signal asked for, if its first raising was lost."""
    if _PENDING_STOP:
        raise _PENDING_STOP[0]


def pending_stop_or(err):
    """The stop a signal asked for, if one is pending (``err`` is then what library
    code made of its lost exception), else ``err``."""
    return _PENDING_STOP[0] if _PENDING_STOP else err


def forget_stop():
    """The stop has been reported: what runs next is not stopped by it."""
    _PENDING_STOP.clear()


_DEPTH = [0]  # how many stop_handlers blocks are open


@contextlib.contextmanager
def stop_handlers(handler=stop_on_signal):
    """``handler`` for SIGINT and SIGTERM inside the block, the previous handlers
    after it. A signal ignored when the block starts stays ignored (a script's
    background job, ``cmd &``, ignores Ctrl-C). The outermost block starts and ends
    with no stop pending; an inner one (a search inside a run) raises a stop still
    pending when it starts and leaves one pending when it ends, for the outer block
    to report."""
    if _DEPTH[0]:
        raise_pending_stop()
    else:
        forget_stop()
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS
                if signal.getsignal(signum) != signal.SIG_IGN}
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        if not _DEPTH[0]:
            forget_stop()


@contextlib.contextmanager
def stops_at_safe_points():
    """Inside the block a SIGINT or SIGTERM only runs the current handler's bookkeeping
    (its stop is remembered, not raised) and the stop is raised at the next
    ``raise_pending_stop`` (a training batch's end) or when the block ends. Raised
    inside TensorFlow's C layer, a stop can make it print a traceback of its own."""
    current = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    handlers = {signum: h for signum, h in current.items() if callable(h)}
    if threading.current_thread() is not threading.main_thread() or not handlers:
        yield
        return

    def remember(signum, frame):
        try:
            handlers[signum](signum, frame)
        except KeyboardInterrupt as stop:
            remember_stop(stop)

    for signum in handlers:
        signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    raise_pending_stop()
