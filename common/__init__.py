"""Shared pieces of the tinyml-pipelines training scripts.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (unless already set): the
tensorflow-model-optimization pruning API only works with Keras 2 (``tf_keras``),
and TensorFlow reads the switch when it is first imported. This is the package's
one import-time side effect; import ``common`` before ``tensorflow``.

Nothing here imports TensorFlow at import time: the modules that need it
(``models``, ``training``, ``optimize``, ``tflite_file``, and ``runtime`` when it
builds an interpreter) are imported only where a model is built, trained,
converted or run, so ``--help`` and every bad-input error answer fast.
"""
import os
import contextlib
import ctypes
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


_quiet = False  # process-wide, like a logging level: set once by the command line


def set_quiet(quiet):
    """Hide (True) or show TensorFlow's native stderr lines; see ``native_stderr_hidden``."""
    global _quiet
    _quiet = quiet


class Captured:
    """What native code wrote to a file descriptor inside ``captured_fd``."""
    text = ""


def _flush_c_stdio():
    """Flush C's stdio buffers: printf output to a file is block-buffered, and would
    otherwise surface after the descriptor is restored."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C library to ask
        pass


@contextlib.contextmanager
def captured_fd(fd):
    """Send file descriptor ``fd`` (1 or 2) to a temp file inside the block; the
    yielded ``Captured`` holds the text afterwards, also when the block raises.
    For C++ code that prints with printf/stderr, which Python's redirects miss."""
    result = Captured()
    (sys.stdout if fd == 1 else sys.stderr).flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield result
        finally:
            (sys.stdout if fd == 1 else sys.stderr).flush()
            _flush_c_stdio()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            result.text = sink.read().decode(errors="replace")


@contextlib.contextmanager
def native_stderr_hidden(replay_on_error=True):
    """In quiet mode, capture what native code writes to file descriptor 2 inside the
    block and drop it; if the block raises, replay it (unless ``replay_on_error`` is
    False: the caller turns the error into its own message, or it is a stop).

    TensorFlow's native libraries print start-up lines (absl's "All log messages
    before absl::InitializeLog()", oneDNN, the CUDA stub) while loading, and the
    TFLite interpreter an XNNPACK line when built, straight to the descriptor: no
    Python filter or ``TF_CPP_MIN_LOG_LEVEL`` reaches them.
    """
    if not _quiet:
        yield
        return
    from common.errors import pending_stop_or
    try:
        with captured_fd(2) as captured:
            yield
    except BaseException as err:
        # a stop (Ctrl-C, SIGTERM, or the error TensorFlow made of one) is no failure
        # the lines could explain
        if replay_on_error and not isinstance(pending_stop_or(err), KeyboardInterrupt):
            sys.stderr.write(captured.text)
        raise


def import_tensorflow():
    """Import TensorFlow (with tf_keras and tfmot, which the pipelines use) once,
    their start-up lines hidden in quiet mode; returns ``tensorflow``."""
    with native_stderr_hidden():
        import tensorflow
    return tensorflow
