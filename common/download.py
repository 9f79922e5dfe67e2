"""Fetch an official dataset file into the data folder when it is missing."""
import os
import shutil
import tempfile
import urllib.request
import zipfile

from common.errors import UserError


def download_and_extract(url, data_dir, expected, allowed=True):
    """Download the zip at ``url`` into ``data_dir`` and unpack it, unless ``expected``
    (a path inside ``data_dir``) already exists. Returns ``expected``. With
    ``allowed=False`` a missing file is a UserError instead.

    Nothing partial is left behind: the archive is downloaded to a temp file and
    unpacked into a temp folder that is moved into place only when complete.
    """
    if os.path.exists(expected):
        return expected
    if not allowed:
        raise UserError(f"{expected!r} is missing (and --no-download is set); point "
                        "--data-dir at a folder that holds it")
    created = not os.path.isdir(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    print(f"downloading {url} into {data_dir}/ ...", flush=True)
    try:
        _fetch(url, data_dir)
    except UserError:
        if created and not os.listdir(data_dir):
            os.rmdir(data_dir)
        raise
    if not os.path.exists(expected):
        raise UserError(f"the archive from {url} did not contain {os.path.basename(expected)}")
    return expected


def _fetch(url, data_dir):
    """Download and unpack the zip at ``url`` into ``data_dir`` (via temp folders)."""
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download") as tmp:
        archive = os.path.join(tmp, "archive.zip")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, \
                    open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
            unpacked = os.path.join(tmp, "unpacked")
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)
        except (OSError, zipfile.BadZipFile) as err:
            raise UserError(f"downloading {url} failed ({err}); download it by hand into "
                            f"{data_dir}/ (or point the options at a local copy)") from None
        for name in os.listdir(unpacked):
            if name.startswith("__MACOSX"):
                continue
            target = os.path.join(data_dir, name)
            if not os.path.exists(target):
                os.replace(os.path.join(unpacked, name), target)
