"""--export-c's C front end, detector and host program for a keyword spotter, built
with the system's C compiler and checked against the Python path on generated audio:
the same features (float and int8), in any chunk size; the same detections; bad
WAVs rejected in one line; an export the C cannot reproduce refused."""
import dataclasses
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

import kws_train
from common import artifacts
from common.kws import audio, c_bundle, c_check, stream
from common.kws.features import METADATA as FEATURES_METADATA, features_text
from common.tflite import micro, runtime, tflite_file
from conftest import ROOT, wav_extensible_bytes, write_wav
from test_cli import assert_bad_input, run_in_process

pytestmark = pytest.mark.skipif(c_check.compiler() is None,
                                reason="no C compiler (cc) on this machine")

# d's and e's recorded features, input quantization and detector settings
D = (audio.FeatureConfig(remove_mean=True, mean_gate_db=30.0), (0.6249550580978394, 84),
     stream.DetectorSettings())
E = (audio.FeatureConfig(), (0.5937100052833557, 80),
     stream.DetectorSettings(0.1, 0.8, 0.995, 1.0))
LABELS = ["down", "go", "left", "no", "right", "stop", "up", "yes", "_silence_",
          "_unknown_"]
OUTPUT_QUANTIZATION = (0.20114682614803314, 54)
RATE = 16000


def build(tmp_path, name, config, in_q, settings, labels=LABELS):
    files = c_bundle.bundle(name, config, settings, labels, in_q, OUTPUT_QUANTIZATION)
    return c_check.build_library(files, name, str(tmp_path / name))


@pytest.fixture(scope="module", params=["d", "e"])
def front_end(request, tmp_path_factory):
    """``(library, stem, config, input quantization)`` for d's and e's features."""
    config, in_q, settings = {"d": D, "e": E}[request.param]
    stem = f"kws_{request.param}"
    return build(tmp_path_factory.mktemp("c"), stem, config, in_q, settings), stem, \
        config, in_q


def made_audio(seconds, seed=0):
    """Tones, a chirp, a speech-like voice (a gliding harmonic pitch under moving
    formants, syllable envelopes), noise bursts and silence, as int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    formant = 700 + 500 * np.sin(2 * np.pi * 3 * t)
    voice = sum(np.sin(h * phase) * np.exp(-((h * pitch - formant) / 400) ** 2)
                for h in range(1, 30))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    signal = 0.3 * voice * syllables
    signal += 0.2 * np.sin(2 * np.pi * 440 * t) * ((t % 3) < 0.5)
    signal += 0.2 * np.sin(2 * np.pi * (300 + 1500 * (t % 2)) * t) * (((t + 1) % 4) < 1)
    signal += 0.05 * rng.standard_normal(len(t)) * ((t % 5) > 4.2)
    signal[(t > 2.0) & (t < 2.7)] = 0.0  # digital silence: the log's floor
    return np.clip(np.round(signal * 32767), -32768, 32767).astype(np.int16)


def python_windows(config, pcm, hop=1600):
    """What stream.Listener computes each hop: extract() of the last second."""
    x = np.concatenate([np.zeros(config.clip_samples, np.float32),
                        pcm.astype(np.float32) / 32768.0])
    return np.array([audio.extract(config, x[end - config.clip_samples:end])[..., 0]
                     for end in range(config.clip_samples + hop, len(x) + 1, hop)])


def compare(front_end, pcm, chunk=None):
    lib, stem, config, in_q = front_end
    fe = c_check.FrontEnd(lib, stem, *config.shape[:2])
    got_q, got_f = fe.push(pcm, chunk)
    want_f = python_windows(config, pcm)
    want_q = runtime.quantize(want_f, np.int8, *in_q)
    return got_q, got_f, want_q, want_f


# float32 rounding noise in the bins far under a pure tone's peak differs between
# numpy's FFT and the direct DFT: ~1e-3 on a first MFCC of -30 (an int8 step: 0.6)
FLOAT_TOLERANCE = 5e-3


def test_features_match_python_on_tones_and_speech_like_audio(front_end):
    got_q, got_f, want_q, want_f = compare(front_end, made_audio(6.0))
    assert got_q.shape == want_q.shape == (60, 49, 10)
    assert np.abs(got_f - want_f).max() < FLOAT_TOLERANCE
    off = np.abs(got_q.astype(int) - want_q)
    assert (off == 0).mean() >= 0.999 and off.max() <= 1


def test_another_mfcc_configuration_matches_python(tmp_path):
    """Not only d's and e's numbers: a zero-padded power-of-two FFT, other filters."""
    config = audio.FeatureConfig(fft_length=1024, num_mel_bins=32, num_mfccs=13,
                                 lower_hz=60.0, upper_hz=7600.0, remove_mean=True)
    lib = build(tmp_path, "kws_o", config, (0.3, -5), E[2])
    got_q, got_f, want_q, want_f = compare((lib, "kws_o", config, (0.3, -5)),
                                           made_audio(3.0, seed=5))
    assert got_q.shape == (30, 49, 13) and np.abs(got_f - want_f).max() < FLOAT_TOLERANCE
    off = np.abs(got_q.astype(int) - want_q)
    assert (off == 0).mean() >= 0.999 and off.max() <= 1


@pytest.mark.parametrize("chunk", [1, 1600, 7919])
def test_any_chunk_size_gives_the_features_of_one_large_chunk(front_end, chunk):
    pcm = made_audio(2.5, seed=1)
    lib, stem, config, _ = front_end
    whole_q, whole_f = c_check.FrontEnd(lib, stem, 49, 10).push(pcm)
    got_q, got_f = c_check.FrontEnd(lib, stem, 49, 10).push(pcm, chunk)
    assert len(whole_q) == 25 and (got_q == whole_q).all() and (got_f == whole_f).all()


@pytest.mark.parametrize("level", ["silence", "full-scale noise", "clipped"])
def test_int8_edge_values_match_python(front_end, level):
    """Digital silence (every band at the log's floor) and full-scale audio (int16's
    -32768 and 32767, features past the int8 range: clipped). Not constants or
    pure square waves: bands holding only float32 rounding noise, where numpy's FFT
    and the DFT differ (docs/c_bundle.md)."""
    rng = np.random.default_rng(4)
    n = 3 * RATE
    pcm = {"silence": np.zeros(n),
           "full-scale noise": rng.integers(-32768, 32768, n),
           "clipped": np.clip(made_audio(3.0, seed=4).astype(np.int64) * 20, -32768,
                              32767)}[level].astype(np.int16)
    got_q, got_f, want_q, want_f = compare(front_end, pcm)
    assert np.abs(got_f - want_f).max() < FLOAT_TOLERANCE
    assert (got_q == want_q).all()
    if not front_end[2].remove_mean:  # e: the int8 clip is reached (d's is centred)
        assert (want_q == (-128 if level == "silence" else 127)).any()


def made_logits(hops, seed=0):
    """Hops of int8 logits: runs where one output (a keyword, background or
    unknown) leads by a margin that drifts, some exactly tied, over noise."""
    rng = np.random.default_rng(seed)
    logits = rng.integers(-40, 20, (hops, len(LABELS)))
    at = 0
    while at < hops:
        run = int(rng.integers(2, 25))
        leader = int(rng.integers(len(LABELS)))
        logits[at:at + run, leader] += int(rng.integers(20, 110))
        if rng.random() < 0.2:  # a tie, longer than the span: two keywords lead together
            run += 10
            logits[at:at + run, leader % 8] += 100
            logits[at:at + run, (leader + 1) % 8] = logits[at:at + run, leader % 8]
        at += run + int(rng.integers(0, 10))
    return np.clip(logits, -128, 127).astype(np.int8)


@pytest.mark.parametrize("settings", [E[2], stream.DetectorSettings(),
                                      stream.DetectorSettings(0.1, 0.3, 0.4, 0.45)])
def test_detections_match_the_python_detector(tmp_path, settings):
    lib = build(tmp_path, "kws_t", E[0], E[1], settings)
    logits = made_logits(3000)
    got = c_check.Detector(lib, "kws_t").push(logits)
    probs = stream.softmax(runtime.dequantize(logits, *OUTPUT_QUANTIZATION))
    want = stream.detect(probs, settings, stream.keyword_mask(LABELS))
    assert len(want) > 20 and got == want
    if settings.threshold < 0.5:  # ties fire: the first label of equal scores wins
        assert any(score < 0.5 for _, _, score in want)


def test_state_fits_in_4_kb_beside_the_arena(tmp_path):
    for config, in_q, settings in (D, E):
        lib = build(tmp_path, "kws_s", config, in_q, settings)
        assert lib.kws_s_frontend_size() + lib.kws_s_detector_size() <= 4096


needs_micro = pytest.mark.skipif(not micro.available(),
                                 reason="tflite-micro not installed (requirements-micro.txt)")


@pytest.fixture(scope="module")
def shipped_e():
    return artifacts.read_model(os.path.join(ROOT, "models", "kws_e.tflite.zlib")
                                ).tflite_bytes


def run_model(runner, inputs):
    """TFLM on each int8 input, as a device's Invoke: the int8 outputs."""
    out = []
    for row in inputs:
        runner.interpreter.set_input(row.reshape(runner.input_shape), 0)
        runner.interpreter.invoke()
        out.append(runner.interpreter.get_output(0)[0].copy())
    return np.array(out, np.int8)


@needs_micro
def test_c_path_detects_what_the_python_listener_detects_on_a_made_stream(
        tmp_path, shipped_e):
    """The shipped e with a low threshold and short spans (made sounds are not
    words: its keywords score under 0.2 on them): C front end -> TFLM -> C detector
    against stream.Listener with TFLM on the same audio."""
    settings = LOW
    runner = micro.MicroRunner(shipped_e)
    files = c_bundle.bundle("kws_e", E[0], settings, LABELS, runner._scale(runner.input),
                            runner._scale(runner.output))
    lib = c_check.build_library(files, "kws_e", str(tmp_path))
    pcm = made_audio(15.0, seed=2)
    inputs, _ = c_check.FrontEnd(lib, "kws_e", 49, 10).push(pcm)
    got = c_check.Detector(lib, "kws_e").push(run_model(runner, inputs))
    listener = stream.Listener(runner, E[0], LABELS, settings)
    want = listener.feed(pcm.astype(np.float32) / 32768.0)
    # the same (time, label); a score moves where an int8 input is one step off
    assert len(want) >= 3 and [d[:2] for d in got] == [d[:2] for d in want]
    assert np.allclose([d[2] for d in got], [d[2] for d in want], atol=0.01)


def wav_header(rate=RATE, bits=16, channels=1, tag=1, data_bytes=0):
    width = bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * width,
                      channels * width, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes))


LOW = stream.DetectorSettings(0.1, 0.3, 0.03, 0.5)  # made sounds score under 0.2


@pytest.fixture(scope="module")
def host_program(tmp_path_factory, shipped_e):
    """The shipped e's bundle (a low threshold) and host program, built with the
    header's command and the strict flags."""
    folder = tmp_path_factory.mktemp("host")
    runner = micro.MicroRunner(shipped_e)
    c_check.write(c_bundle.bundle("kws_e", E[0], LOW, LABELS, runner._scale(runner.input),
                                  runner._scale(runner.output)), str(folder))
    command = c_bundle.BUILD.format(stem="kws_e").split()
    subprocess.run(command[:1] + c_check.STRICT + command[1:], cwd=folder, check=True)
    return folder


@pytest.mark.skipif(not shutil.which("g++"), reason="no C++ compiler (g++)")
def test_a_cpp_firmware_links_the_c_bundle(host_program):
    """TFLM is C++: the headers declare the C functions extern "C"."""
    (host_program / "firmware.cc").write_text(
        '#include "kws_e_frontend.h"\n#include "kws_e_detector.h"\n'
        "int main() { static kws_e_frontend_t fe; static kws_e_detector_t det;\n"
        "  kws_e_frontend_init(&fe); kws_e_detector_init(&det); return 0; }\n")
    for name in ("kws_e_frontend", "kws_e_detector"):
        subprocess.run(["cc", "-std=c99", "-c", f"{name}.c"], cwd=host_program, check=True)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-o", "firmware", "firmware.cc",
                    "kws_e_frontend.o", "kws_e_detector.o", "-lm"], cwd=host_program,
                   check=True)
    assert subprocess.run([str(host_program / "firmware")]).returncode == 0


def listen(folder, wav, *args):
    return subprocess.run([str(folder / "kws_e_listen"), str(wav), *args],
                          capture_output=True, text=True, cwd=folder)


@needs_micro
def test_host_program_prints_kws_detect_lines(host_program, shipped_e):
    pcm = made_audio(8.0, seed=3)
    wav = host_program / "made.wav"
    wav.write_bytes(wav_header(data_bytes=2 * len(pcm)) + pcm.tobytes())
    first = listen(host_program, wav, "--inputs", "inputs.bin")
    assert first.returncode == 0 and first.stdout == "", first.stderr
    inputs = np.fromfile(host_program / "inputs.bin", np.int8).reshape(-1, 49, 10)
    assert len(inputs) == 80
    runner = micro.MicroRunner(shipped_e)
    run_model(runner, inputs).tofile(host_program / "outputs.bin")
    second = listen(host_program, wav, "--outputs", "outputs.bin")
    # the same lines as kws_detect.show on the Listener's detections
    listener = stream.Listener(runner, E[0], LABELS, LOW)
    found = listener.feed(pcm.astype(np.float32) / 32768.0)
    want = "".join(f"{t:.2f}  {LABELS[i]}  {s:.2f}\n" for t, i, s in found)
    assert len(found) >= 3 and second.returncode == 0 and second.stdout == want, \
        second.stderr
    assert "processed 8.0 s of audio" in second.stderr
    short = listen(host_program, wav, "--outputs", "short.bin")  # fewer hops than audio
    assert short.returncode == 2 and "error: " in short.stderr


@pytest.mark.parametrize("case, fragment", [
    ("8-bit", "is not 16-bit PCM"), ("float", "is not 16-bit PCM"),
    ("extensible float", "is not 16-bit PCM"), ("44.1 kHz", "is not sampled at 16000 Hz"),
    ("stereo", "is not mono"), ("text", "is not a WAV file"), ("empty", "is not a WAV"),
    ("cut header", "is not a readable WAV file")])
def test_host_program_rejects_a_bad_wav_in_one_line(host_program, case, fragment):
    body = {"8-bit": wav_header(bits=8, data_bytes=100) + bytes(100),
            "float": wav_header(bits=32, tag=3, data_bytes=400) + bytes(400),
            "extensible float": wav_extensible_bytes([0.0] * 100, bits=32, subformat=3),
            "44.1 kHz": wav_header(rate=44100, data_bytes=200) + bytes(200),
            "stereo": wav_header(channels=2, data_bytes=400) + bytes(400),
            "text": b"hello, this is not audio\n", "empty": b"",
            "cut header": wav_header()[:30]}[case]
    wav = host_program / "bad.wav"
    wav.write_bytes(body)
    result = listen(host_program, wav, "--inputs", "x.bin")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment in lines[0] and result.stdout == ""


def test_host_program_reads_a_truncated_wav_as_far_as_it_goes(host_program):
    pcm = made_audio(3.0)
    wav = host_program / "cut.wav"
    wav.write_bytes(wav_header(data_bytes=2 * len(pcm)) + pcm[:RATE].tobytes())
    result = listen(host_program, wav, "--inputs", "cut.bin")
    assert result.returncode == 0, result.stderr
    assert "truncated: its header promises 48000 samples, it holds 16000" in result.stderr
    assert os.path.getsize(host_program / "cut.bin") == 10 * 490  # 1 s: 10 hops
    # a streamed WAV (data size 0) is read to its end
    write_wav(str(host_program / "streamed.wav"), [0.0] * RATE)
    data = bytearray((host_program / "streamed.wav").read_bytes())
    data[40:44] = bytes(4)
    (host_program / "streamed.wav").write_bytes(bytes(data))
    result = listen(host_program, host_program / "streamed.wav", "--inputs", "s.bin")
    assert result.returncode == 0 and "truncated" not in result.stderr
    assert os.path.getsize(host_program / "s.bin") == 10 * 490


def test_the_export_writes_the_model_s_own_settings(shipped_e):
    files = c_bundle.files_for("kws_e", shipped_e)
    assert sorted(files) == ["kws_e_detector.c", "kws_e_detector.h", "kws_e_frontend.c",
                             "kws_e_frontend.h", "kws_e_listen_main.c"]
    header = files["kws_e_detector.h"].decode()
    for line in ("#define KWS_E_THRESHOLD 0.9950000047683716f",
                 "#define KWS_E_AVERAGE_HOPS 8", "#define KWS_E_MIN_GAP_HOPS 10",
                 "#define KWS_E_NUM_LABELS 10"):
        assert line in header
    assert "#define KWS_E_INPUT_ZERO_POINT 80" in files["kws_e_frontend.h"].decode()


def test_export_of_features_the_c_cannot_reproduce_is_refused(tmp_path, capsys,
                                                              shipped_e):
    stft = audio.FeatureConfig(kind="stft", frame_length=480, frame_step=320,
                               fft_length=512, log_magnitude=True, resize=40)
    model = tmp_path / "stft.tflite"
    model.write_bytes(tflite_file.with_metadata(shipped_e, FEATURES_METADATA,
                                                features_text(stft)))
    out = tmp_path / "out"
    code, _, err = run_in_process(kws_train.main, [
        "--version", "e", "--evaluate", str(model), "--export-c", "--out-dir", str(out),
        "--data-dir", str(tmp_path), "--no-download"], capsys)
    assert_bad_input(code, err, "--export-c cannot write the C front end for this "
                                "model: its features are 'stft'", out)
    # and before training, from the recipe
    recipe = dataclasses.replace(kws_train.RECIPES["e"], features=stft)
    with pytest.raises(Exception, match="its features are 'stft'"):
        c_bundle.check_recipe(recipe)
    # the other refusals
    mfcc, settings = audio.FeatureConfig(), stream.DetectorSettings()
    for why, args in (("not a whole number of frame steps",
                       (mfcc, stream.DetectorSettings(hop_s=0.05625), np.int8, np.int8)),
                      ("its output is not int8", (mfcc, settings, np.int8, np.float32)),
                      ("softmax table", (mfcc, settings, np.int8, np.int8, 3.0))):
        assert why in c_bundle.unsupported(*args)
    assert c_bundle.unsupported(mfcc, settings, np.int8, np.int8, 0.2) is None
