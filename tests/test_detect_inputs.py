"""kws_detect.py on bad and odd inputs (issue 28's sweep): each is one ``error:`` line
and exit 2, or the audio read as it is, with memory bounded however long the input.
The shipped models/kws_b.tflite.zlib is the model: nothing is trained here."""
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

from common import artifacts
from conftest import ROOT, write_wav

MODEL = os.path.join(ROOT, "models", "kws_b.tflite.zlib")
MEMORY_CAP = 2 << 30  # bytes of address space: reading /dev/zero whole fails, not the host


def cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def detect(*args, capped=False, **kwargs):
    if "stdout" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run([sys.executable, os.path.join(ROOT, "kws_detect.py"), *args],
                          cwd=ROOT, preexec_fn=cap_memory if capped else None, **kwargs)


def assert_one_error(result, fragment):
    err = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    lines = err.strip().splitlines()
    assert result.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def noise_wav(path, rate=16000, channels=1, seconds=6.0):
    rng = np.random.default_rng(3)
    write_wav(str(path), list(0.5 * rng.standard_normal(int(rate * seconds) * channels)),
              rate=rate, channels=channels)
    return str(path)


def with_rate(path, rate):
    """The WAV at ``path`` with its header's sample rate replaced by ``rate``."""
    content = bytearray(open(path, "rb").read())
    content[24:28] = struct.pack("<I", rate)
    return bytes(content)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_an_endless_device_is_refused_from_its_first_bytes():
    """/dev/zero used to be read whole: 23 GiB in 65 s, then killed by the kernel."""
    assert_one_error(detect(MODEL, "/dev/zero", capped=True),
                     "'/dev/zero' is not a readable WAV file")


@pytest.mark.parametrize("rate", [0, 4_000_000_000])
def test_a_sample_rate_no_recording_has_is_refused(tmp_path, rate):
    """0 Hz divided by zero in the resampler; 4 GHz processed 0.0 s and exited 0."""
    path = tmp_path / "x.wav"
    path.write_bytes(with_rate(noise_wav(path, seconds=0.5), rate))
    assert_one_error(detect(MODEL, str(path)), f"sampled at {rate} Hz, outside 1000-")


def test_a_pipe_is_read_as_it_arrives_its_header_checked_before_it_ends(tmp_path):
    """A pipe used to be read to its end before its header was looked at: an endless
    one filled the memory. Here the writer keeps the pipe open: only reading as it
    arrives can answer."""
    content = with_rate(noise_wav(tmp_path / "x.wav", seconds=0.5), 0)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, content)
        result = detect(MODEL, f"/dev/fd/{read_end}", pass_fds=(read_end,), capped=True,
                        timeout=60)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert_one_error(result, "sampled at 0 Hz")


def test_help_lists_every_exit_status():
    result = detect("--help", text=True)
    assert result.returncode == 0
    assert "0 done; 2 bad input; 130 interrupted, 143 terminated" in " ".join(
        result.stdout.split())


def test_a_model_damaged_inside_a_valid_zlib_stream_is_refused(tmp_path):
    """The JSON beside a .tflite.zlib records its sha256; kws_detect measures nothing
    that would show the damage, so a mismatch is an error (--evaluate warns)."""
    model, record = tmp_path / "kws_b.tflite.zlib", tmp_path / "kws_b.json"
    shutil.copy(MODEL, model)
    shutil.copy(MODEL.replace(".tflite.zlib", ".json"), record)
    assert artifacts.pair_warning(artifacts.read_model(str(model)), strict=True) is None
    tflite = bytearray(zlib.decompress(model.read_bytes()))
    tflite[len(tflite) // 2] ^= 0xFF  # a weight, say: still a TFL3 flatbuffer
    model.write_bytes(zlib.compress(bytes(tflite), 9))
    assert_one_error(detect(str(model), noise_wav(tmp_path / "x.wav", seconds=0.5)),
                     "describes another model")
    record.unlink()  # no record, nothing to check against: it runs
    assert detect(str(model), str(tmp_path / "x.wav")).returncode == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_output_is_one_error_line(tmp_path):
    """``> /dev/full``: an OSError traceback, exit 1."""
    with open("/dev/full", "w") as full:
        result = detect(MODEL, noise_wav(tmp_path / "x.wav", seconds=1.0), "--json",
                        stdout=full, stderr=subprocess.PIPE)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == \
        "error: cannot write the detections: No space left on device"


def test_a_wav_on_standard_input_or_a_pipe_is_heard_as_the_file(tmp_path):
    """A WAV piped to ``-`` was taken as raw PCM (its header 22 samples, a stereo
    44.1 kHz recording noise at the wrong speed)."""
    path = noise_wav(tmp_path / "x.wav", rate=44100, channels=2)
    args = ["--json", "--threshold", "0.3"]
    from_file = detect(MODEL, path, *args, text=True)
    assert from_file.returncode == 0, from_file.stderr
    found = json.loads(from_file.stdout)
    assert found, "the noise must fire at this threshold"
    with open(path, "rb") as f:
        piped = detect(MODEL, "-", *args, stdin=f)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == found
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(open(path, "rb").read())
    writer = threading.Thread(target=write)
    writer.start()
    try:
        through_pipe = detect(MODEL, f"/dev/fd/{read_end}", *args, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        writer.join()
    assert through_pipe.returncode == 0, through_pipe.stderr
    assert json.loads(through_pipe.stdout) == found
