"""Files the pipelines write and read: atomic writes, zlib models, JSON results."""
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import zlib
from dataclasses import dataclass

from common.errors import UserError

ZLIB_LEVEL = 9


def check_output_dir(path):
    """Prove before any long work that ``path`` can receive the results, without
    creating it: an existing folder must take a file; a missing one needs its
    nearest existing ancestor to be a folder that does (``publish`` creates it)."""
    probe_in = path
    while not os.path.exists(probe_in):
        parent = os.path.dirname(os.path.abspath(probe_in))
        if parent == os.path.abspath(probe_in):
            break
        probe_in = parent
    try:
        if not os.path.isdir(probe_in):
            raise NotADirectoryError(20, "not a folder", probe_in)
        with tempfile.NamedTemporaryFile(dir=probe_in, prefix=".probe", delete=True):
            pass
    except OSError as err:
        raise UserError(f"output folder {path!r} is not writable ({err.strerror}: "
                        f"{probe_in!r}); choose another with --out-dir") from None


def _write_temp(folder, data):
    """``data`` in a new temp file in ``folder`` (mode 0644); returns its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
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


@dataclass(frozen=True)
class ModelFile:
    """A model file as given: its flatbuffer, and the size the budget judges."""
    path: str
    tflite_bytes: bytes
    file_bytes: int           # the byte count of the file itself
    compressed: bool          # a .tflite.zlib (else a raw .tflite)

    def sizes(self):
        """``tflite_bytes`` and ``zlib_bytes``: for a .tflite.zlib the file's own byte
        count (the verdict is on what the user has, however it was compressed); for
        a raw .tflite the size of the .tflite.zlib the pipeline would ship."""
        if self.compressed:
            return {"tflite_bytes": len(self.tflite_bytes), "zlib_bytes": self.file_bytes}
        return sizes(self.tflite_bytes, compress(self.tflite_bytes))


def read_model(path):
    """Read a ``.tflite`` or ``.tflite.zlib`` file; a missing, unreadable or corrupt
    file is a UserError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"cannot read model {path!r}: {err.strerror}") from None
    compressed = path.endswith(".zlib")
    tflite = data
    if compressed:
        try:
            tflite = zlib.decompress(data)
        except zlib.error:
            raise UserError(f"{path!r} is not a valid zlib-compressed model") from None
    # every TFLite flatbuffer carries the file identifier "TFL3" at byte 4
    if len(tflite) < 8 or tflite[4:8] != b"TFL3":
        raise UserError(f"{path!r} is not a TFLite model (no TFL3 identifier)")
    return ModelFile(path, tflite, len(data), compressed)


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


def publish(out_dir, files):
    """Write one result's files (``{name: bytes}``) into ``out_dir`` as a unit: every
    file is written to a temp file first, then each is moved into place; if any step
    fails (or is interrupted), the files already moved are put back as they were and
    nothing new is left, and the error is a UserError. Creates ``out_dir`` if needed
    (and removes it again on failure). Returns the paths written."""
    created = not os.path.isdir(out_dir)
    staged, replaced = [], []   # (tmp, path); (path, previous bytes or None)
    try:
        os.makedirs(out_dir, exist_ok=True)
        for name, data in files.items():
            staged.append((_write_temp(out_dir, data), os.path.join(out_dir, name)))
        for tmp, path in staged:
            previous = None
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    previous = f.read()
            os.replace(tmp, path)
            replaced.append((path, previous))
    except BaseException as err:
        _roll_back(staged, replaced, out_dir if created else None)
        if isinstance(err, OSError):
            raise UserError(f"cannot write the results to {out_dir!r} "
                            f"({err.strerror}: {err.filename!r}); nothing was written"
                            ) from None
        raise
    return [path for _, path in staged]


def _roll_back(staged, replaced, created_dir):
    """Undo ``publish``: restore replaced files, delete new ones and temp files."""
    for path, previous in reversed(replaced):
        if previous is None:
            os.unlink(path)
        else:
            atomic_write_bytes(path, previous)
    for tmp, _ in staged:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if created_dir and os.path.isdir(created_dir) and not os.listdir(created_dir):
        os.rmdir(created_dir)
