#!/usr/bin/env python3
"""kws_detect.py's speed at every common sample rate: 2 minutes of noise in a 16-bit
mono WAV per rate, run through ``kws_detect.py MODEL FILE`` pinned to one CPU core
(``taskset``), its own "x real time" figure (the audio's length over the time from
the first sample read to the last detection: model loading not counted) read from
its output. Writes docs/detect_speed.json.

Usage: python docs/detect_speed.py [--model models/kws_e.tflite.zlib] [--core 1]
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)
SECONDS = 120


def speed(model, path, core):
    """kws_detect.py's own "Nx real time" on ``path``, one core."""
    out = subprocess.run(["taskset", "-c", str(core), sys.executable,
                          os.path.join(ROOT, "kws_detect.py"), model, path],
                         capture_output=True, text=True, check=True).stderr
    return int(re.search(r"\((\d+)x real time\)", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "kws_e.tflite.zlib"))
    parser.add_argument("--core", type=int, default=1)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in RATES:
            path = os.path.join(tmp, f"noise_{rate}.wav")
            noise = np.random.default_rng(rate).normal(0, 1000, rate * SECONDS)
            with wave.open(path, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes(noise.astype("<i2").tobytes())
            rows[rate] = speed(args.model, path, args.core)
            print(f"{rate} Hz: {rows[rate]}x real time", flush=True)
    result = {"model": os.path.relpath(args.model, ROOT), "seconds": SECONDS,
              "x_real_time": rows, "host": platform.node(),
              "load_average": os.getloadavg()}
    with open(os.path.join(HERE, "detect_speed.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
