"""Fetch an official dataset file into the data folder when it is missing.

For tests only: the environment variable ``TINYML_DOWNLOAD_BASE`` (e.g.
``http://127.0.0.1:8123``) replaces everything before an archive's file name in its
URL, so the tests can serve small archives from a local HTTP server. It is not a user
option: the command lines have none for it.
"""
import http.client
import os
import sys
import tempfile
import time
import urllib.request
import zipfile
import zlib

from common import progress
from common.errors import UserError

BASE_OVERRIDE = "TINYML_DOWNLOAD_BASE"  # tests only, see the module docstring
CHUNK = 1 << 16


def resolve(url):
    """``url``, or the same file name under ``$TINYML_DOWNLOAD_BASE`` (tests only)."""
    base = os.environ.get(BASE_OVERRIDE)
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def download_and_extract(url, data_dir, expected, allowed=True, hint=None, quiet=False):
    """Download the zip at ``url`` into ``data_dir`` and unpack it, unless ``expected``
    (a path inside ``data_dir``) already exists. Returns ``expected``. With
    ``allowed=False`` a missing file is a UserError instead. ``hint`` tells the user
    how to point the caller's options at a local copy (default: "point --data-dir at
    a folder holding <expected's name>"); ``quiet`` hides the progress line.

    Nothing partial is left behind: the archive is downloaded to a temp file and
    unpacked into a temp folder inside ``data_dir``, and its entries are moved into
    place only when the whole archive is in and holds ``expected``.
    """
    if os.path.exists(expected):
        return expected
    hint = hint or f"point --data-dir at a folder holding {os.path.basename(expected)}"
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"--data-dir {data_dir!r} is a file, not a folder; {hint}")
    if not allowed:
        raise UserError(f"{expected!r} is missing (and --no-download is set); {hint}")
    created = not os.path.isdir(data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
        tmp = tempfile.TemporaryDirectory(dir=data_dir, prefix=".download")
    except OSError as err:
        if created and os.path.isdir(data_dir) and not os.listdir(data_dir):
            os.rmdir(data_dir)
        raise UserError(f"cannot write the download into --data-dir {data_dir!r} "
                        f"({err.strerror or err}); {hint}") from None
    url = resolve(url)
    print(f"downloading {url} into {data_dir}/ ...", flush=True)
    try:
        with tmp:
            _fetch(url, data_dir, tmp.name, os.path.basename(expected), hint, quiet)
    except BaseException:
        if created and os.path.isdir(data_dir) and not os.listdir(data_dir):
            os.rmdir(data_dir)
        raise
    return expected


def _fetch(url, data_dir, tmp, name, hint, quiet):
    """Download the zip at ``url`` into ``tmp``, unpack it there and move its entries
    (``__MACOSX`` excepted) into ``data_dir``, after checking it holds ``name``."""
    archive = os.path.join(tmp, "archive.zip")
    unpacked = os.path.join(tmp, "unpacked")
    by_hand = f"download it by hand into {data_dir}/ or {hint}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, \
                open(archive, "wb") as f:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            received = _copy(response, f, total, quiet)
        # http.client ends a body cut short by the server like a complete one
        if total is not None and received < total:
            raise UserError(f"downloading {url} was interrupted: {received} of {total} "
                            f"bytes received; try again, or {by_hand}")
        with zipfile.ZipFile(archive) as z:
            z.extractall(unpacked)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        raise UserError(f"the archive from {url} is corrupt ({err}); try again, or "
                        f"{by_hand}") from None
    except (OSError, http.client.HTTPException) as err:
        raise UserError(f"downloading {url} failed ({err}); {by_hand}") from None
    entries = [e for e in os.listdir(unpacked) if not e.startswith("__MACOSX")]
    if name not in entries:
        raise UserError(f"the archive from {url} does not contain {name}; {by_hand}")
    for entry in entries:
        target = os.path.join(data_dir, entry)
        if not os.path.exists(target):
            os.replace(os.path.join(unpacked, entry), target)


def _copy(response, f, total, quiet):
    """Copy the body to ``f``; unless ``quiet``, show the bytes (and percent) received:
    on a terminal one line redrawn at most 10 times a second, elsewhere (a log file)
    a plain line at most every ``progress.LOG_INTERVAL`` seconds and one at the end.
    Returns the byte count."""
    terminal = progress.on_terminal()
    interval = 0.1 if terminal else progress.LOG_INTERVAL
    received, shown = 0, time.monotonic()
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        f.write(chunk)
        received += len(chunk)
        now = time.monotonic()
        if not quiet and now - shown >= interval:
            _show(received, total, terminal)
            shown = now
    if not quiet:
        _show(received, total, terminal)
        if terminal:
            print(flush=True)
    return received


def _show(received, total, terminal):
    of = f" of {total:,} bytes ({100 * received // total} %)" if total else " bytes"
    if terminal:
        sys.stdout.write(f"\r  {received:,}{of}")
        sys.stdout.flush()
    else:
        print(f"  {received:,}{of}", flush=True)
