"""The download path end to end: small archives in the official layouts, served from an
HTTP server on 127.0.0.1 that the tests start, reached through the tests-only URL
override (TINYML_DOWNLOAD_BASE), fetched by the real scripts in a scratch working
directory. Nothing trains: each run stops right after loading its data."""
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile

import pytest

from common import download, progress
from common.errors import UserError
from common.forecast import jena
from common.kws import speech
from conftest import LABELS, ROOT, tone, write_jena_csv, write_wav

JENA_ZIP = jena.URL.rsplit("/", 1)[-1]      # jena_climate_2009_2016.csv.zip
SPEECH_ZIP = speech.URL.rsplit("/", 1)[-1]  # mini_speech_commands.zip
SCRIPTS = {"forecast": (JENA_ZIP, "forecast_train.py", "--csv"),
           "kws": (SPEECH_ZIP, "kws_train.py", "--data-dir")}


def zip_bytes(files):
    """A stored (uncompressed) zip of ``{name: bytes}``, entries in the given order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return buffer.getvalue()


def jena_archive(tmp_path, rows=50):
    """The Keras bucket's layout: the CSV alone at the top. 50 rows: the forecaster
    stops right after loading them (too few for its splits)."""
    csv = write_jena_csv(tmp_path / "served.csv", rows).read_bytes()
    return {jena.FILENAME: csv}


def speech_archive(tmp_path):
    """The official layout: mini_speech_commands/<label>/*.wav and its README, plus
    the macOS resource forks under __MACOSX/ that must not be unpacked."""
    files = {}
    for k, label in enumerate(LABELS):
        for n in range(2):
            path = tmp_path / "served" / f"{label}{n}.wav"
            write_wav(str(path), tone(300 + 100 * k, seconds=0.05))
            files[f"mini_speech_commands/{label}/{n:08x}_nohash_0.wav"] = path.read_bytes()
    files["mini_speech_commands/README.md"] = b"Mini Speech Commands\n"
    files["__MACOSX/mini_speech_commands/._README.md"] = b"\x00\x05\x16\x07"
    files["__MACOSX/._mini_speech_commands"] = b"\x00\x05\x16\x07"
    return files


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold the server

    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.bodies.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "cut": the server closes the connection halfway through the body
        self.wfile.write(body[:len(body) // 2] if self.server.cut else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A threaded HTTP server on 127.0.0.1 (port 0: any free port), the download
    override pointing at it; ``bodies`` maps a file name to its bytes, ``requests``
    records every request, ``cut`` makes it close each body halfway."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.bodies, httpd.requests, httpd.cut = {}, [], False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(download.BASE_OVERRIDE, f"http://127.0.0.1:{httpd.server_port}/")
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def listing(root):
    """Every path under ``root``, relative to it (folders end with /)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        found.update(os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs)
        found.update(os.path.normpath(os.path.join(rel, f)) for f in files)
    return found


def run_script(task, tmp_path, data_dir, *extra):
    """Run the task's script from an empty scratch working directory (the tests only
    override the download URL, through the environment the server fixture set)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    args = [sys.executable, os.path.join(ROOT, SCRIPTS[task][1]), "--version", "b",
            "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "models")]
    if task == "kws":  # split lists naming a clip the archive lacks: stops after loading
        splits = tmp_path / "splits"
        splits.mkdir(exist_ok=True)
        for split in speech.SPLITS:
            (splits / f"kws_{split}_split.txt").write_text(
                f"./data/mini_speech_commands/down/absent_{split}.wav\n")
        args += ["--split-dir", str(splits)]
    result = subprocess.run(args + list(extra), cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    assert os.listdir(cwd) == [], "the run wrote into its working directory"
    return result


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def serve(server, task, tmp_path):
    name = SCRIPTS[task][0]
    files = jena_archive(tmp_path) if task == "forecast" else speech_archive(tmp_path)
    server.bodies[name] = zip_bytes(files)
    return files


def test_forecast_download_lands_in_data_dir_once(server, tmp_path):
    files = serve(server, "forecast", tmp_path)
    data = tmp_path / "data"
    before = listing(tmp_path)
    for attempt in range(2):
        result = run_script("forecast", tmp_path, data)
        # the CSV was found and read: its 50 rows are too few to split
        assert result.returncode == 2 and error_lines(result) == [
            "error: 50 rows are too few: each of the train/validation/test splits needs "
            "at least 12 rows (one window), so the CSV needs at least 111 rows; pass "
            "the full Jena climate CSV"], result.stderr
        assert server.requests == [f"/{JENA_ZIP}"]  # the second run did not download
        assert ("downloading" in result.stdout) == (attempt == 0)
        assert (data / jena.FILENAME).read_bytes() == files[jena.FILENAME]
        assert listing(tmp_path) - before == {"data/", f"data/{jena.FILENAME}", "cwd/"}


def test_kws_download_lands_in_data_dir_without_macosx_once(server, tmp_path):
    files = serve(server, "kws", tmp_path)
    data = tmp_path / "data"
    before = listing(tmp_path)
    for attempt in range(2):
        result = run_script("kws", tmp_path, data)
        assert result.returncode == 2, result.stderr
        assert error_lines(result) == [  # the clips were found; the list names another
            f"error: '{data}/mini_speech_commands/down/absent_train.wav' (listed in "
            f"{tmp_path}/splits/kws_train_split.txt) does not exist; point --data-dir "
            "at the folder holding mini_speech_commands/"]
        assert server.requests == [f"/{SPEECH_ZIP}"]
        assert ("downloading" in result.stdout) == (attempt == 0)
        unpacked = {f"data/{name}" for name in files if not name.startswith("__MACOSX")}
        folders = {"data/", "data/mini_speech_commands/"} | {
            f"data/mini_speech_commands/{label}/" for label in LABELS}
        assert listing(tmp_path) - before == unpacked | folders | {
            "cwd/", "splits/", *(f"splits/kws_{s}_split.txt" for s in speech.SPLITS)}
        for name in unpacked:
            assert (tmp_path / name).read_bytes() == files[name[len("data/"):]]


def corrupt(body):
    """Flip a byte inside the last member's data: the zip's directory still reads,
    the earlier members unpack, then its CRC check fails."""
    last = zipfile.ZipFile(io.BytesIO(body)).infolist()[-1]
    start = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
    flipped = bytearray(body)
    flipped[start + 1] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("task", SCRIPTS)
@pytest.mark.parametrize("fault, message", [
    ("cut", r"error: downloading http://127\.0\.0\.1:\d+/\S+ was interrupted: \d+ of "
            r"\d+ bytes received; try again, or download it by hand into .*"),
    ("crc", r"error: the archive from http://\S+ is corrupt \(Bad CRC-32 for file .*\);"
            " try again, or download it by hand into .*"),
    ("not_zip", r"error: the archive from http://\S+ is corrupt \(File is not a zip "
                r"file\); try again, or download it by hand into .*")])
def test_failed_download_leaves_nothing(server, tmp_path, task, fault, message):
    files = serve(server, task, tmp_path)
    name = SCRIPTS[task][0]
    if task == "kws":  # the last member is a WAV (the __MACOSX ones moved first)
        files = dict(sorted(files.items(), key=lambda item: item[0].endswith(".wav")))
        server.bodies[name] = zip_bytes(files)
    if fault == "cut":
        server.cut = True
    elif fault == "crc":
        server.bodies[name] = corrupt(server.bodies[name])
    else:  # a captive portal's page instead of the archive
        server.bodies[name] = b"<html>sign in to the network</html>\n" * 20
    # kws: a data folder that already holds something; forecast: none yet
    data = tmp_path / "data"
    if task == "kws":
        data.mkdir()
        (data / "notes.txt").write_text("mine\n")
    before = listing(tmp_path)
    result = run_script(task, tmp_path, data)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert re.fullmatch(message, line), line
    assert SCRIPTS[task][2] in line  # names the option for a local copy
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) - before <= {"cwd/", "splits/"} | {
        f"splits/kws_{s}_split.txt" for s in speech.SPLITS}
    if task == "kws":
        assert os.listdir(data) == ["notes.txt"]
    else:
        assert not data.exists()  # it was made for the download, and removed


@pytest.mark.parametrize("task", SCRIPTS)
def test_unreachable_server_names_the_local_option(server, tmp_path, monkeypatch, task):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(download.BASE_OVERRIDE, f"http://127.0.0.1:{port}")
    result = run_script(task, tmp_path, tmp_path / "data")
    assert result.returncode == 2
    [line] = error_lines(result)
    hint = {"forecast": "pass --csv PATH with a local copy",
            "kws": "point --data-dir at a folder holding mini_speech_commands"}[task]
    assert line.startswith(f"error: downloading http://127.0.0.1:{port}/") and line.endswith(
        f"download it by hand into {tmp_path}/data/ or {hint}"), line
    assert "point the options" not in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("task", SCRIPTS)
@pytest.mark.parametrize("case", ["file", "under_a_file"])
def test_data_dir_that_cannot_hold_the_download(server, tmp_path, task, case):
    serve(server, task, tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    data = blocker if case == "file" else blocker / "data"
    result = run_script(task, tmp_path, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = error_lines(result)
    expected = {"file": f"error: --data-dir '{blocker}' is a file, not a folder; ",
                "under_a_file": f"error: cannot write the download into --data-dir "
                                f"'{data}' (Not a directory); "}[case]
    assert line.startswith(expected), line
    assert SCRIPTS[task][2] in line
    assert server.requests == []  # refused before downloading anything
    assert blocker.read_text() == "not a folder\n"


def test_read_only_data_dir(server, tmp_path, monkeypatch):
    """A folder the download cannot write into (as root every folder is writable, so
    the refusal is simulated where the temp folder is made)."""
    serve(server, "forecast", tmp_path)
    data = tmp_path / "data"
    data.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    if os.geteuid() == 0:
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    else:
        data.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"^cannot write the download into --data-dir "
                                            r"'.*' \(Permission denied\); pass --csv"):
            download.download_and_extract(jena.URL, str(data), str(data / jena.FILENAME),
                                          hint="pass --csv PATH with a local copy")
    finally:
        data.chmod(0o755)
    assert os.listdir(data) == [] and server.requests == []


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_on_one_updating_line_unless_quiet(server, tmp_path, capsys, monkeypatch,
                                                    quiet, terminal):
    """On a terminal one line redrawn with \\r; in a log file plain lines, so that a
    redirected run does not keep every update on one line."""
    monkeypatch.setattr(progress, "on_terminal", lambda: terminal)
    serve(server, "forecast", tmp_path)
    size = len(server.bodies[JENA_ZIP])
    download.download_and_extract(jena.URL, str(tmp_path), str(tmp_path / jena.FILENAME),
                                  quiet=quiet)
    out, err = capsys.readouterr()
    assert err == ""
    first, *rest = out.split("\n")
    assert first.startswith("downloading http://127.0.0.1:")
    if quiet:
        assert rest == [""]
    elif terminal:  # one line, redrawn with \r, ending at 100 % of the size
        progress_line, end = rest
        assert end == "" and progress_line.startswith("\r")
        assert progress_line.split("\r")[-1] == f"  {size:,} of {size:,} bytes (100 %)"
    else:
        assert "\r" not in out and rest == [f"  {size:,} of {size:,} bytes (100 %)", ""]


def test_override_is_read_in_one_place(monkeypatch):
    monkeypatch.delenv(download.BASE_OVERRIDE, raising=False)
    assert download.resolve(speech.URL) == speech.URL
    monkeypatch.setenv(download.BASE_OVERRIDE, "http://127.0.0.1:9/")
    assert download.resolve(speech.URL) == f"http://127.0.0.1:9/{SPEECH_ZIP}"
    options = subprocess.run([sys.executable, os.path.join(ROOT, "forecast_train.py"),
                              "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "TINYML" not in options and "download-base" not in options
