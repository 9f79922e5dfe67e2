"""The exported C front end and detector run from Python (``ctypes``), for the tests
and ``docs/c_bundle_check.py``: the bundle built as a shared library with the
system's C compiler, fed audio and model outputs, compared with the Python path."""
import ctypes
import os
import shutil
import subprocess

import numpy as np

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def compiler():
    """The system's C compiler, or None."""
    return shutil.which(os.environ.get("CC", "cc"))


def write(files, folder):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def build_library(files, stem, folder, flags=("-O2",)):
    """``files`` (``c_bundle.bundle``'s) written to ``folder`` and built as a shared
    library with the state structs' sizes exported; its ``ctypes.CDLL``."""
    write(files, folder)
    sizes = os.path.join(folder, f"{stem}_sizes.c")
    with open(sizes, "w") as f:
        f.write(f'#include "{stem}_frontend.h"\n#include "{stem}_detector.h"\n'
                + "".join(f"size_t {stem}_{part}_size(void) "
                          f"{{ return sizeof({stem}_{part}_t); }}\n"
                          for part in ("frontend", "detector")))
    library = os.path.join(folder, f"lib{stem}.so")
    subprocess.run([compiler(), *STRICT, *flags, "-shared", "-fPIC", "-o", library,
                    f"{stem}_frontend.c", f"{stem}_detector.c", f"{stem}_sizes.c", "-lm"],
                   cwd=folder, check=True, capture_output=True)
    lib = ctypes.CDLL(library)
    for name in ("frontend_size", "detector_size"):
        getattr(lib, f"{stem}_{name}").restype = ctypes.c_size_t
    getattr(lib, f"{stem}_frontend_push").restype = ctypes.c_size_t
    getattr(lib, f"{stem}_frontend_push").argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_size_t]
    for name in ("frontend_input", "frontend_features", "detector_push_int8",
                 "detector_push_probs"):  # pointers, not C ints
        getattr(lib, f"{stem}_{name}").argtypes = [ctypes.c_void_p] * (
            3 if name.startswith("detector") else 2)
    return lib


class FrontEnd:
    """One C front end's state: ``push`` int16 samples, get each hop's features."""

    def __init__(self, lib, stem, rows, cols):
        self.size, self.shape = rows * cols, (rows, cols)
        self.state = ctypes.create_string_buffer(getattr(lib, f"{stem}_frontend_size")())
        getattr(lib, f"{stem}_frontend_init")(self.state)
        self.c_push, self.c_features, self.c_input = (
            getattr(lib, f"{stem}_frontend_{name}")
            for name in ("push", "features", "input"))

    def push(self, samples, chunk=None):
        """``(int8 inputs [hops, rows, cols], float features [hops, rows, cols])`` of the
        hops ``samples`` complete, pushed ``chunk`` samples at a time (all at once)."""
        samples = np.ascontiguousarray(samples, np.int16)
        chunk = chunk or max(1, len(samples))
        inputs, floats = [], []
        q = np.zeros(self.size, np.int8)
        f = np.zeros(self.size, np.float32)
        for start in range(0, len(samples), chunk):
            piece = samples[start:start + chunk]
            at = 0
            while at < len(piece):
                at += self.c_push(self.state, piece[at:].ctypes.data, len(piece) - at)
                self.c_features(self.state, f.ctypes.data)
                if self.c_input(self.state, q.ctypes.data):
                    inputs.append(q.reshape(self.shape).copy())
                    floats.append(f.reshape(self.shape).copy())
        return (np.array(inputs, np.int8).reshape(-1, *self.shape),
                np.array(floats, np.float32).reshape(-1, *self.shape))


class Detection(ctypes.Structure):
    _fields_ = [("label", ctypes.c_int), ("score", ctypes.c_float),
                ("time_s", ctypes.c_double), ("hop", ctypes.c_long)]


class Detector:
    """One C detector's state: ``push`` each hop's int8 logits, get detections
    ``(time_s, label index, score)`` as ``stream.Listener`` returns them."""

    def __init__(self, lib, stem):
        self.state = ctypes.create_string_buffer(getattr(lib, f"{stem}_detector_size")())
        getattr(lib, f"{stem}_detector_init")(self.state)
        self.c_push = getattr(lib, f"{stem}_detector_push_int8")

    def push(self, logits):
        found, hit = [], Detection()
        for row in np.ascontiguousarray(logits, np.int8).reshape(len(logits), -1):
            if self.c_push(self.state, row.ctypes.data, ctypes.byref(hit)):
                found.append((round(hit.time_s, 6), hit.label, float(hit.score)))
        return found
