"""Files the pipelines write and read: atomic writes, zlib models, JSON results."""
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import mmap
import os
import platform
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass

from common.errors import UserError, raise_pending_stop

ZLIB_LEVEL = 9


def check_output_dir(path):
    """Prove before any long work that ``path`` can receive the results, without
    creating it: an existing folder must take a file; for a missing one, the part
    that is missing is created in a temp folder inside its nearest existing ancestor
    and removed (so a name too long for the file system is caught here, not after
    training). A dangling symbolic link or a loop is not a folder."""
    probe_in, missing = os.path.abspath(path), []
    while not os.path.lexists(probe_in):
        parent, name = os.path.split(probe_in)
        if parent == probe_in:
            break
        probe_in, missing = parent, [name] + missing
    try:
        if os.path.islink(probe_in) and not os.path.exists(probe_in):
            os.stat(probe_in)  # raises: the system's reason (missing target, loop)
        if not os.path.isdir(probe_in):
            raise NotADirectoryError(20, "not a folder", probe_in)
        trial = tempfile.mkdtemp(dir=probe_in, prefix=".probe-", suffix=".tmp")
    except OSError as err:
        reason = ("a symbolic link to a missing target"
                  if isinstance(err, FileNotFoundError) else err.strerror or str(err))
        raise UserError(f"output folder {path!r} is not writable ({reason}: "
                        f"{probe_in!r}); choose another with --out-dir") from None
    try:
        inner = os.path.join(trial, *missing)
        os.makedirs(inner, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=inner, prefix=".probe-", suffix=".tmp"):
            pass
    except OSError as err:
        raise UserError(f"output folder {path!r} cannot be created ({err.strerror or err}"
                        f"); choose another with --out-dir") from None
    finally:
        shutil.rmtree(trial, ignore_errors=True)


def _write_temp(folder, data, prefix="."):
    """``data`` in a new temp file in ``folder`` (mode 0644); returns its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` via a temp file and ``os.replace``: never a partial file."""
    tmp = _write_temp(os.path.dirname(os.path.abspath(path)), data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def json_bytes(obj):
    return (json.dumps(obj, indent=2) + "\n").encode()


def compress(tflite_bytes):
    return zlib.compress(tflite_bytes, ZLIB_LEVEL)


def sizes(tflite_bytes, compressed):
    """The size figures of a model: ``tflite_bytes`` (the flash a device needs) and
    ``zlib_bytes`` (the shipped file, what the size budget judges)."""
    return {"tflite_bytes": len(tflite_bytes), "zlib_bytes": len(compressed)}


# No model of these pipelines comes near this (the largest is about 60 kB raw): a
# file, or a zlib stream, that holds more is not one of them (/dev/zero, a zlib bomb)
# and is refused before it fills the memory.
MAX_MODEL_BYTES = 64 << 20


@dataclass(frozen=True)
class ModelFile:
    """A model file as given: its flatbuffer, and the size the budget judges."""
    path: str
    tflite_bytes: bytes
    file_bytes: int           # the byte count of the file itself
    compressed: bool          # a .tflite.zlib (else a raw .tflite)
    sha256: str = ""          # of the file's own bytes (a JSON's model_sha256)

    def sizes(self):
        """``tflite_bytes`` and ``zlib_bytes``: for a .tflite.zlib the file's own byte
        count (the verdict is on what the user has, however it was compressed); for
        a raw .tflite the size of the .tflite.zlib the pipeline would ship."""
        if self.compressed:
            return {"tflite_bytes": len(self.tflite_bytes), "zlib_bytes": self.file_bytes}
        return sizes(self.tflite_bytes, compress(self.tflite_bytes))


def read_input(path, kind, missing_hint, folder_hint, mapped=False):
    """The bytes of an input file the user named, read once (a pipe, ``<(...)``, can
    be read only once, and a checksum must be of the bytes parsed). A folder, a
    missing or an unreadable file is a UserError naming ``kind`` ("WAV file") and what
    to do about it. With ``mapped``, a regular file is memory-mapped (read-only)
    instead of read: the system pages in what is used, so a recording of any length
    costs no memory up front (a pipe or an empty file is still read)."""
    if os.path.isdir(path):
        raise UserError(f"{path!r} is a folder, not a {kind}; {folder_hint}")
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if mapped and stat.S_ISREG(info.st_mode) and info.st_size:
                try:
                    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError, OverflowError):
                    pass  # a file system, or an address space, that cannot map it
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{kind} {path!r} does not exist; {missing_hint}") from None
    except OSError as err:
        raise UserError(f"cannot read {kind} {path!r}: {err.strerror or err}") from None


def read_model(path):
    """Read a ``.tflite`` or ``.tflite.zlib`` file; a missing, unreadable, corrupt or
    oversized file (more than ``MAX_MODEL_BYTES``, read or decompressed) is a
    UserError."""
    too_large = (f"{path!r} holds more than {MAX_MODEL_BYTES >> 20} MiB, far more "
                 "than any model of this pipeline: not a model file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read model {path!r}: {err.strerror}") from None
    if len(data) > MAX_MODEL_BYTES:
        raise UserError(too_large)
    compressed = path.endswith(".zlib")
    tflite = data
    if compressed:
        stream = zlib.decompressobj()
        try:
            tflite = stream.decompress(data, MAX_MODEL_BYTES + 1)
        except zlib.error:
            raise UserError(f"{path!r} is not a valid zlib-compressed model") from None
        if len(tflite) > MAX_MODEL_BYTES:
            raise UserError(too_large.replace("holds", "decompresses to"))
        if not stream.eof:
            raise UserError(f"{path!r} is not a valid zlib-compressed model (truncated)")
    # every TFLite flatbuffer carries the file identifier "TFL3" at byte 4
    if len(tflite) < 8 or tflite[4:8] != b"TFL3":
        raise UserError(f"{path!r} is not a TFLite model (no TFL3 identifier)")
    return ModelFile(path, tflite, len(data), compressed, sha256_bytes(data))


def pair_warning(model, strict=False):
    """A one-line warning when the JSON beside a ``.tflite.zlib`` records another
    model's sha256 (a pair mixed by a SIGKILL inside publishing, or by hand), else
    None. A JSON from before ``model_sha256`` existed, or none, says nothing. With
    ``strict`` (a caller with no other sign of a damaged model: no accuracy is
    measured) the mismatch is a UserError."""
    suffix = ".tflite.zlib"
    if not model.path.endswith(suffix):
        return None
    sibling = model.path[:-len(suffix)] + ".json"
    try:
        with open(sibling, "rb") as f:
            recorded = json.loads(f.read(MAX_MODEL_BYTES)).get("model_sha256")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return f"warning: {sibling!r} beside the model cannot be read as a results JSON"
    if recorded is not None and recorded != model.sha256:
        differs = (f"{sibling!r} describes another model (its model_sha256 is "
                   f"{str(recorded)[:12]}..., this file's {model.sha256[:12]}...)")
        if strict:
            raise UserError(f"{differs}: {model.path!r} is damaged, or the two files are "
                            "not one result; train it again, or move the JSON away if "
                            "you trust the model")
        return f"warning: {differs}: the two files are not one result"
    return None


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions():
    """Versions of the packages that shape the artifact, for the results JSON."""
    versions = {"python": platform.python_version()}
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy",
                 "pandas", "ai-edge-litert"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


WRITTEN = []  # every path this process published (run_main empties it per command)
TEMP_PREFIX = ".publish-"   # publish's temp files: only a run holding the lock has any
STALE_SECONDS = 3600        # other temp names (earlier versions, probes): by age
_STALE = re.compile(r"\.(publish-.*|probe-.*|[a-z0-9_]{8})\.tmp")


def publish(out_dir, files, guard=None):
    """Write one result's files (``{name: bytes}``) into ``out_dir`` as a unit, and
    return the paths written.

    The folder (created if needed, removed again on failure) is locked for the whole
    publish, so two runs never interleave their files; a second run waits, saying so
    in one line. Temp files left by earlier runs killed outright are removed first.
    ``guard()``, when given, runs under the lock before anything is written: if it
    returns False, nothing is written and the result is []. Every file is written to
    a temp file, then each is moved into place with SIGINT and SIGTERM held back, so
    the moves and their roll-back are never cut short: if a move fails, the files
    already moved are put back as they were, the ones created are removed, and the
    error is a UserError. A signal that came during the moves is acted on after them.
    The paths written are also added to ``WRITTEN``, so that an interrupt at any
    later point can say what was kept (``cli.run_main``). (A SIGKILL cannot be held
    back: between two moves it leaves the new file beside the old one, which the
    JSON's ``model_sha256`` exposes.)"""
    raise_pending_stop()  # a run asked to stop writes nothing, lost signal or not
    created = not os.path.isdir(out_dir)
    staged, backups, written = [], {}, []  # backups: {path: link to the file replaced}
    step = out_dir              # what was being written, for the error message
    try:
        os.makedirs(out_dir, exist_ok=True)
        with _locked(out_dir):
            _remove_stale_temps(out_dir)
            if guard is None or guard() is not False:
                for name, data in files.items():
                    step = path = os.path.join(out_dir, name)
                    staged.append((_write_temp(out_dir, data, TEMP_PREFIX), path))
                    if os.path.isfile(path) or os.path.islink(path):
                        backups[path] = _backup(path, len(backups))
                with _signals_held() as held:
                    failure = _move_into_place(staged, backups)
                    if not failure:
                        written = [path for _, path in staged]
                        WRITTEN.extend(written)
                    for backup in backups.values():
                        _unlink(backup)
                if held:  # acted on now (after a success, run_main names WRITTEN)
                    try:
                        held[0]()
                    except KeyboardInterrupt as err:
                        if failure:
                            raise type(err)(str(failure)) from None
                        raise
                if failure:
                    raise failure
    except BaseException as err:
        for tmp in [tmp for tmp, _ in staged] + list(backups.values()):
            _unlink(tmp)
        _remove_if_empty(out_dir if created else None)
        if isinstance(err, OSError):
            raise UserError(f"cannot write the results to {out_dir!r} "
                            f"({_reason(err, step)}); nothing was written") from None
        raise
    _remove_if_empty(out_dir if created and not written else None)  # guard said no
    return written


def _remove_if_empty(folder):
    if folder and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def _reason(err, path):
    """``No space left on device: 'models/x.json'``: the system's words and the file
    (an error from ``write`` carries no file name)."""
    return f"{err.strerror or err}: {err.filename or path!r}"


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _backup(path, index):
    """A hard link to the file about to be replaced (no data copied, no space needed
    to put it back); a copy where the file system has no hard links."""
    folder = os.path.dirname(path)
    backup = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-old{index}.tmp")
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        with open(path, "rb") as f:
            backup = _write_temp(folder, f.read(), TEMP_PREFIX)
    return backup


def _move_into_place(staged, backups):
    """Move every temp file onto its path; on a failure put back what was moved (the
    previous file from its backup, or no file) and return a UserError saying what
    could not be put back, else None."""
    moved = []
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
            moved.append(path)
        return None
    except BaseException as err:
        lost = []
        for done in reversed(moved):
            try:
                if done in backups:
                    os.replace(backups[done], done)
                else:
                    os.unlink(done)
            except OSError:
                lost.append(done)
        if not isinstance(err, OSError):
            raise
        failed = _reason(err, path)
    folder = os.path.dirname(path)
    if lost:
        return UserError(f"cannot write the results to {folder!r} ({failed}); could not "
                         f"put back {', '.join(lost)}: this run's file is there")
    return UserError(f"cannot write the results to {folder!r} ({failed}); nothing was "
                     "written")


@contextlib.contextmanager
def _locked(folder):
    """An exclusive lock on ``folder`` itself (flock on the directory: no lock file
    to leave behind); a second run waits for it, saying so in one line. Where the
    file system has no such locks, the publish goes on unlocked rather than lose
    the run."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run to finish writing into {folder!r} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no flock here (some network file systems)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temps(folder):
    """Remove temp files that runs killed outright left in ``folder``: every
    ``.publish-*.tmp`` (the caller holds the lock, so their writer is gone), and
    other temp names of this module older than an hour."""
    now = time.time()
    for entry in os.scandir(folder):
        if not _STALE.fullmatch(entry.name):
            continue
        try:
            if entry.name.startswith(TEMP_PREFIX) or \
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to remove: it stays


@contextlib.contextmanager
def _signals_held():
    """Hold back SIGINT and SIGTERM inside the block: yields a list that gets, for a
    signal that came, a function acting on it as its handler would have."""
    held = []
    if threading.current_thread() is not threading.main_thread():
        yield held  # signals are handled in the main thread only
        return
    previous = {}

    def hold(signum, frame):
        if not held:
            handler = previous[signum]
            held.append(lambda: handler(signum, None) if callable(handler)
                        else signal.raise_signal(signum))
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not None:  # None: not set from Python
            previous[signum] = signal.signal(signum, hold)
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
