#!/usr/bin/env python3
"""The C bundle --export-c writes for d and e, checked on the host against the Python
path: writes docs/c_bundle_check.json (the figures docs/c_bundle.md reports).

- front end: the C front end against audio.extract on the test split's clips (each
  pushed as 1 s of int16 samples; its last hop's window is the clip) and against
  stream.window_features (kws_detect's front end) on a made stream (every hop):
  largest float difference, share of identical int8 inputs;
- detections on a made stream of about 10 minutes (test clips 2-5 s apart over
  changing noise, with non-keyword events; stream.make_recording): the host program
  (C front end -> TFLM's Python interpreter on its int8 inputs -> C detector) against
  kws_detect.py on the same WAV, and against stream.Listener with TFLM as the model
  (what tells a runtime difference, LiteRT against TFLM, from a C one);
- cost: front end host time per 100 ms hop, incremental against recomputing the
  whole window (both the C code, -O2, 1 thread) and against audio.extract (numpy
  recomputing the whole window); the state structs' sizes, the stack the C needs
  (gcc -fstack-usage), the code and tables' size (x86-64 here, not a device's).

Usage: python docs/c_bundle_check.py [--data-dir data] [--clips 800] [--stream-clips 170]
       python docs/c_bundle_check.py --run-model MODEL INPUTS.bin OUTPUTS.bin
         (TFLM on each hop's int8 input a host program wrote with --inputs)
"""
import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # numpy on 1 thread, as the C: the terms
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401
import numpy as np  # noqa: E402

from common import artifacts  # noqa: E402
from common.kws import audio, c_bundle, c_check, stream  # noqa: E402
from common.tflite import micro, runtime  # noqa: E402

BENCH_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "@STEM@_frontend.h"
#define SECONDS 12
#define REPEATS 30
static double now(void) {  /* this thread's CPU time: a busy machine's waits left out */
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) { qsort(v, n, sizeof *v, by_value); return v[n / 2]; }
int main(void) {
    static @STEM@_frontend_t fe;
    static int16_t audio[16000 * SECONDS];
    static int8_t input[@UP@_INPUT_SIZE];
    static double hop_t[REPEATS * 16000 * SECONDS / @UP@_HOP_SAMPLES], window_t[REPEATS * SECONDS];
    unsigned seed = 1;
    long i;
    int rep, hops = 0, windows = 0;
    for (i = 0; i < 16000 * SECONDS; ++i) {
        seed = seed * 1103515245u + 12345u;
        audio[i] = (int16_t)((int)(seed >> 16) % 8000 - 4000);
    }
    for (rep = 0; rep < REPEATS; ++rep) {
        @STEM@_frontend_init(&fe);
        @STEM@_frontend_push(&fe, audio, 16000);  /* a full window first */
        @STEM@_frontend_input(&fe, input);
        for (i = 16000; i + @UP@_HOP_SAMPLES <= 16000 * SECONDS; i += @UP@_HOP_SAMPLES) {
            double start = now();  /* a hop: its new frames, then the input */
            @STEM@_frontend_push(&fe, audio + i, @UP@_HOP_SAMPLES);
            @STEM@_frontend_input(&fe, input);
            hop_t[hops++] = now() - start;
        }
        for (i = 0; i + 16000 <= 16000 * SECONDS; i += 16000) {
            double start = now();  /* the whole window: every frame anew, then the input */
            long at = i;
            memset(&fe, 0, sizeof fe);  /* the window's first frame at its first sample */
            while (at < i + 16000)
                at += (long)@STEM@_frontend_push(&fe, audio + at, (size_t)(i + 16000 - at));
            fe.hop_ready = 1;
            @STEM@_frontend_input(&fe, input);
            window_t[windows++] = now() - start;
        }
    }
    printf("%.9f %.9f %d\n", median(hop_t, hops), median(window_t, windows), (int)input[0]);
    return 0;
}
"""


def load_clips(data_dir, count):
    """The first ``count`` test clips (data/kws_test_split.txt) as int16 and labels."""
    with open(os.path.join(data_dir, "kws_test_split.txt")) as f:
        paths = [line.strip() for line in f if line.strip()][:count]
    clips, labels = [], []
    for path in paths:
        local = os.path.join(data_dir, path.split("data/", 1)[1]) if "data/" in path \
            else os.path.join(data_dir, path)
        samples, rate = audio.read_pcm(local)
        assert rate == 16000 and samples.shape[1] == 1, local
        clips.append(np.array(samples[:16000, 0]))
        labels.append(local.split(os.sep)[-2])
    return clips, labels


def difference(got_q, got_f, want_f, quantization):
    want_q = runtime.quantize(want_f, np.int8, *quantization)
    off = np.abs(got_q.astype(int) - want_q)
    return {"values": int(off.size), "largest_float_difference": float(np.abs(
        got_f - want_f).max()), "int8_identical": round(float((off == 0).mean()), 6),
        "int8_off_by_1": int((off == 1).sum()), "int8_off_by_more": int((off > 1).sum())}


def clips_check(lib, stem, config, quantization, clips):
    got_q, got_f, want_f = [], [], []
    for clip in clips:
        pcm = np.zeros(config.clip_samples, np.int16)
        pcm[:len(clip)] = clip
        q, f = c_check.FrontEnd(lib, stem, *config.shape[:2]).push(pcm)
        got_q.append(q[-1])
        got_f.append(f[-1])
        want_f.append(audio.extract(config, pcm.astype(np.float32) / 32768.0)[..., 0])
    return difference(np.array(got_q), np.array(got_f), np.array(want_f), quantization)


def run_model(tflite_bytes, inputs_path, outputs_path):
    """TFLM on each hop's int8 input (as a device's Invoke): the int8 outputs."""
    runner = micro.MicroRunner(tflite_bytes)
    size = int(np.prod(runner.input_shape))
    inputs = np.fromfile(inputs_path, np.int8).reshape(-1, size)
    out = []
    for row in inputs:
        runner.interpreter.set_input(row.reshape(runner.input_shape), 0)
        runner.interpreter.invoke()
        out.append(runner.interpreter.get_output(0)[0].copy())
    np.array(out, np.int8).tofile(outputs_path)
    return len(out)


def run_litert(tflite_bytes, inputs):
    """kws_detect's runtime (LiteRT, 1 thread) on each int8 input: the int8 outputs."""
    runner = runtime.Runner(tflite_bytes, num_threads=1)
    out = []
    for row in inputs:
        runner.interpreter.set_tensor(runner.input["index"],
                                      row.reshape(runner.input_shape))
        runner.interpreter.invoke()
        out.append(runner.interpreter.get_tensor(runner.output["index"])[0].copy())
    return np.array(out, np.int8)


def compared(a, b):
    """Two detection lists ``[(time_s, label, score text)]``: the same (time, label)?
    What only each has, and the largest score difference where both fire."""
    keys_a, keys_b = [d[:2] for d in a], [d[:2] for d in b]
    scores_b = {d[:2]: float(d[2]) for d in b}
    return {"same_time_and_label": keys_a == keys_b, "count": [len(a), len(b)],
            "only_first": [list(k) for k in keys_a if k not in keys_b],
            "only_second": [list(k) for k in keys_b if k not in keys_a],
            "largest_score_difference_printed": max(
                [abs(float(d[2]) - scores_b[d[:2]]) for d in a if d[:2] in scores_b],
                default=0.0)}


def parse_lines(text, labels):
    """``[(time_s, label index, score as printed)]`` of kws_detect's lines."""
    found = []
    for line in text.splitlines():
        time_s, label, score = line.split()
        found.append((round(float(time_s), 2), labels.index(label), score))
    return found


def stream_check(version, tflite_bytes, spotter, folder, wav_path, pcm, quantization):
    """The host program's detections against kws_detect.py and against the Listener
    with TFLM; the front end on every hop of the stream."""
    stem = f"kws_{version}"
    host = os.path.join(folder, f"{stem}_listen")
    inputs, outputs = "inputs.bin", "outputs.bin"  # in folder: short names in the JSON
    first = subprocess.run([host, wav_path, "--inputs", inputs], capture_output=True,
                           text=True, check=True, cwd=folder)
    hops = run_model(tflite_bytes, os.path.join(folder, inputs),
                     os.path.join(folder, outputs))
    second = subprocess.run([host, wav_path, "--outputs", outputs], capture_output=True,
                            text=True, check=True, cwd=folder)
    c_found = parse_lines(second.stdout, spotter.labels)
    detect = subprocess.run([sys.executable, os.path.join(ROOT, "kws_detect.py"),
                             os.path.join(ROOT, "models", f"{stem}.tflite.zlib"), wav_path],
                            capture_output=True, text=True, check=True)
    py_found = parse_lines(detect.stdout, spotter.labels)
    settings = spotter.settings or stream.DetectorSettings()
    listener = stream.Listener(micro.MicroRunner(tflite_bytes), spotter.features,
                               spotter.labels, settings)
    tflm_found = [(round(t, 2), i, f"{s:.2f}") for t, i, s in
                  listener.feed(pcm.astype(np.float32) / 32768.0)]
    c_inputs = np.fromfile(os.path.join(folder, inputs), np.int8).reshape(-1, *spotter.features.shape[:2])
    want_f = np.array([f[..., 0] for f in stream.window_features(
        spotter.features, pcm.astype(np.float32) / 32768.0, settings.hop_s)])
    # the host program writes int8 only: the float features come from the library
    lib = c_check.build_library(c_bundle.files_for(stem, tflite_bytes), stem,
                                os.path.join(folder, "lib"))
    got_q, got_f = c_check.FrontEnd(lib, stem, *spotter.features.shape[:2]).push(pcm)
    assert (got_q == c_inputs).all(), "the library and the host program differ"
    # the C front end and detector with kws_detect's runtime: a difference from
    # kws_detect is then the bundle's, one that goes away here the runtime's
    litert_found = [(t, i, f"{sc:.2f}") for t, i, sc in c_check.Detector(lib, stem).push(
        run_litert(tflite_bytes, got_q))]
    litert_found = [(round(t, 2), i, sc) for t, i, sc in litert_found]
    return {"hops": hops, "seconds": round(hops * settings.hop_s, 1),
            "settings": dataclasses.asdict(settings),
            "front_end": difference(got_q, got_f, want_f, quantization),
            "host_program_vs_kws_detect": compared(c_found, py_found),
            "host_program_vs_listener_tflm": compared(c_found, tflm_found),
            "c_with_litert_vs_kws_detect": compared(litert_found, py_found),
            "host_program_stderr": second.stderr.strip(),
            "host_program_inputs_stderr": first.stderr.strip()}


def cost(folder, stem, config, lib):
    bench = os.path.join(folder, f"{stem}_bench.c")
    with open(bench, "w") as f:
        f.write(BENCH_C.replace("@STEM@", stem).replace("@UP@", stem.upper()))
    subprocess.run([c_check.compiler(), "-std=c99", "-O2", "-D_POSIX_C_SOURCE=199309L",
                    "-o", bench[:-2], bench, f"{stem}_frontend.c", "-lm"],
                   cwd=folder, check=True)
    hop_s, window_s = map(float, subprocess.run(
        [bench[:-2]], capture_output=True, text=True, check=True).stdout.split()[:2])
    x = np.random.default_rng(0).normal(0, 0.1, config.clip_samples).astype(np.float32)
    audio.extract(config, x)
    times = []
    for _ in range(300):  # this thread's CPU time, as the C's; the median
        start = time.thread_time()
        audio.extract(config, x)
        times.append(time.thread_time() - start)
    python_s = float(np.median(times))
    stack = {}
    for name in (f"{stem}_frontend.c", f"{stem}_detector.c"):
        subprocess.run([c_check.compiler(), "-std=c99", "-O2", "-fstack-usage", "-c",
                        name, "-o", name[:-2] + ".o"], cwd=folder, check=True)
        with open(os.path.join(folder, name[:-2] + ".su")) as f:
            for line in f:
                where, size, _ = line.rsplit(None, 2)
                stack[where.split(":")[-1]] = int(size)
    sizes = {}
    for name in ("frontend", "detector"):
        out = subprocess.run(["size", f"{stem}_{name}.o"], cwd=folder, capture_output=True,
                             text=True, check=True).stdout.splitlines()[1].split()
        sizes[name] = {"text_and_tables": int(out[0]), "data": int(out[1]),
                       "bss": int(out[2])}
    # the deepest chain: push -> frame_features (frontend_input -> remove_mean is shallower)
    deepest = max(stack.get(f"{stem}_frontend_push", 0) + stack.get("frame_features", 0),
                  stack.get(f"{stem}_frontend_input", 0)
                  + stack.get(f"{stem}_frontend_features", 0) + stack.get("remove_mean", 0),
                  stack.get(f"{stem}_detector_push_int8", 0)
                  + stack.get(f"{stem}_detector_push_probs", 0))
    return {"hop_ms": round(1000 * hop_s, 4), "whole_window_ms": round(1000 * window_s, 4),
            "incremental_speedup": round(window_s / hop_s, 2),
            "python_extract_ms": round(1000 * python_s, 4),
            "speedup_vs_python_extract": round(python_s / hop_s, 2),
            "frontend_state_bytes": int(getattr(lib, f"{stem}_frontend_size")()),
            "detector_state_bytes": int(getattr(lib, f"{stem}_detector_size")()),
            "stack_bytes_by_function": stack, "stack_bytes_deepest": deepest,
            "object_sizes_x86_64": sizes}


def write_wav(path, pcm):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--clips", type=int, default=800)
    parser.add_argument("--stream-clips", type=int, default=170)
    parser.add_argument("--versions", default="d,e")
    parser.add_argument("--out", default=os.path.join(HERE, "c_bundle_check.json"))
    parser.add_argument("--run-model", nargs=3, metavar=("MODEL", "INPUTS", "OUTPUTS"))
    args = parser.parse_args()
    if args.run_model:
        model, inputs, outputs = args.run_model
        hops = run_model(artifacts.read_model(model).tflite_bytes, inputs, outputs)
        print(f"ran the model on {hops} hops' inputs: {outputs}")
        return
    began = time.time()
    clips, labels = load_clips(args.data_dir, args.clips)
    rng = np.random.default_rng(30)
    some = clips[:args.stream_clips]
    made = stream.make_recording(
        "c_bundle_check", np.array([np.pad(c.astype(np.float32) / 32768.0,
                                           (0, 16000 - len(c))) for c in some]),
        np.zeros(len(some), int), 16000, 0, rng)
    pcm = np.clip(np.round(made.signal * 32767), -32768, 32767).astype(np.int16)
    report = {"host": {"cpu": runtime.cpu_model(), "cores": os.cpu_count(),
                       "compiler": subprocess.run([c_check.compiler(), "--version"],
                                                  capture_output=True, text=True
                                                  ).stdout.splitlines()[0],
                       "python": platform.python_version(), "numpy": np.__version__},
              "clips": len(clips), "stream_seconds": round(len(pcm) / 16000, 1),
              "stream_words": len(made.words), "stream_events": len(made.events),
              "versions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "stream.wav")
        write_wav(wav_path, pcm)
        for version in args.versions.split(","):
            stem = f"kws_{version}"
            path = os.path.join(ROOT, "models", f"{stem}.tflite.zlib")
            tflite_bytes = artifacts.read_model(path).tflite_bytes
            spotter = stream.read_spotter(path)
            folder = os.path.join(tmp, stem)
            files = c_bundle.files_for(stem, tflite_bytes, path)
            lib = c_check.build_library(files, stem, folder)
            warnings = subprocess.run(
                [c_check.compiler(), *c_check.STRICT, "-O2", "-o", f"{stem}_listen",
                 f"{stem}_listen_main.c", f"{stem}_frontend.c", f"{stem}_detector.c",
                 "-lm"], cwd=folder, capture_output=True, text=True)
            quantization = micro.MicroRunner._scale(micro.MicroRunner(
                tflite_bytes).input)
            print(f"{stem}: front end on {len(clips)} clips ...", flush=True)
            row = {"strict_build_warnings": warnings.stderr.strip() or None,
                   "strict_build_ok": warnings.returncode == 0,
                   "input_quantization": list(quantization),
                   "features": dataclasses.asdict(spotter.features),
                   "clips": clips_check(lib, stem, spotter.features, quantization, clips)}
            print(f"{stem}: stream of {len(pcm) / 16000:.0f} s ...", flush=True)
            row["stream"] = stream_check(version, tflite_bytes, spotter, folder, wav_path,
                                         pcm, quantization)
            row["cost"] = cost(folder, stem, spotter.features, lib)
            row["cost"]["arena_bytes"] = json.load(open(os.path.join(
                ROOT, "models", f"{stem}.json")))["metrics"]["arena_bytes"]
            row["cost"]["ram_beyond_arena_bytes"] = (row["cost"]["frontend_state_bytes"]
                                                     + row["cost"]["detector_state_bytes"])
            report["versions"][version] = row
            print(json.dumps({k: row[k] for k in ("clips",)}), flush=True)
            print(json.dumps({k: v for k, v in row["stream"].items()
                              if not k.endswith("stderr")}), flush=True)
            print(json.dumps({k: v for k, v in row["cost"].items()
                              if k != "stack_bytes_by_function"}), flush=True)
    report["check_minutes"] = round((time.time() - began) / 60, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
