"""Files the pipelines write and read: atomic writes, zlib models, JSON results."""
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import zlib

from common.errors import UserError

ZLIB_LEVEL = 9


def ensure_writable_dir(path):
    """Create ``path`` if needed and prove it is writable before any long work starts."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe", delete=True):
            pass
    except OSError as err:
        raise UserError(f"output folder {path!r} is not writable ({err.strerror}); "
                        "choose another with --out-dir") from None


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` via a temp file and ``os.replace``: never a partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def compress(tflite_bytes):
    return zlib.compress(tflite_bytes, ZLIB_LEVEL)


def load_tflite_bytes(path):
    """Read a ``.tflite`` or ``.tflite.zlib`` file; a corrupt file is a UserError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"cannot read model {path!r}: {err.strerror}") from None
    if path.endswith(".zlib"):
        try:
            data = zlib.decompress(data)
        except zlib.error:
            raise UserError(f"{path!r} is not a valid zlib-compressed model") from None
    # every TFLite flatbuffer carries the file identifier "TFL3" at byte 4
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{path!r} is not a TFLite model (no TFL3 identifier)")
    return data


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


def write_model_and_results(out_dir, stem, zlib_bytes, results):
    """Write ``stem.tflite.zlib`` then ``stem.json``, each atomically; return the model path."""
    model_path = os.path.join(out_dir, f"{stem}.tflite.zlib")
    atomic_write_bytes(model_path, zlib_bytes)
    atomic_write_json(os.path.join(out_dir, f"{stem}.json"), results)
    return model_path
