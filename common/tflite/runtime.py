"""Run a .tflite model the way it ships: LiteRT's interpreter where installed, else
TensorFlow's, with quantized inputs and outputs handled from the model's own scale
and zero point."""
import os
import platform
import statistics
import sys
import time

import numpy as np

import common
from common.errors import UserError

def interpreter_class():
    """``(Interpreter, name)``: LiteRT's interpreter where installed (the maintained
    one), else TensorFlow's (deprecated since TF 2.20, which says so in a warning
    shown with --verbose). Imported on first use: TensorFlow loads only here."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:  # pragma: no cover - depends on the installation
        return common.import_tensorflow().lite.Interpreter, "tf.lite"


def quantize(x, dtype, scale, zero_point):
    """Float values -> ``dtype``: unchanged for float32, else ``x / scale +
    zero_point`` rounded and clipped to the integer range."""
    if dtype == np.float32:
        return np.asarray(x, np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(y, scale, zero_point):
    """A model's output -> float32 (``(y - zero_point) * scale`` for integer outputs)."""
    if y.dtype == np.float32:
        return y
    return (y.astype(np.float32) - zero_point) * scale


class Runner:
    """One interpreter, built once, that takes float inputs and returns float outputs.

    ``num_threads=None`` lets the interpreter choose (its default).
    """

    def __init__(self, tflite_bytes, num_threads=None):
        interpreter, self.interpreter_name = interpreter_class()
        try:
            with common.native_stderr_hidden(replay_on_error=False):
                self.interpreter = interpreter(model_content=tflite_bytes,
                                               num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise UserError(f"the interpreter cannot load the model: "
                            f"{str(err).splitlines()[0]}") from None
        self.num_threads, self.tflite_bytes = num_threads, tflite_bytes
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"])

    def quantize_input(self, x):
        """Float sample -> the model's input dtype (round and clip for integer inputs)."""
        return quantize(np.asarray(x, np.float32).reshape(self.input_shape),
                        self.input["dtype"], *self.input["quantization"])

    def read_output(self):
        return dequantize(self.interpreter.get_tensor(self.output["index"]),
                          *self.output["quantization"])

    def set_input(self, x):
        self.interpreter.set_tensor(self.input["index"], self.quantize_input(x))

    def __call__(self, x):
        """One sample in, one float output out."""
        self.set_input(x)
        self.interpreter.invoke()
        return self.read_output()[0]

    def predict(self, samples):
        """Run every sample through the model, one at a time (batch 1, as deployed)."""
        return np.stack([self(sample) for sample in samples])


def summarize_ms(seconds):
    """Mean, median and 90th percentile of a list of durations, in milliseconds."""
    ms = sorted(1000.0 * s for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return {"mean_ms": round(statistics.fmean(ms), 4),
            "median_ms": round(statistics.median(ms), 4),
            "p90_ms": round(p90, 4), "runs": len(ms)}


def cpu_model():
    """The host CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_description():
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "interpreter": interpreter_class()[1]}


BUSY_LOAD_PER_CORE = 0.5  # other work, per core, that makes a latency figure doubtful
_warned_busy = False       # the busy-host warning is printed once per process


def load_average():
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not on Linux/macOS
        return None


def host_load(before, after):
    """The host's load while timing, recorded beside the latency figures: the load
    averages before and after, the CPU count, and ``busy``: other work beyond this
    process (which counts 1 in the load) above ``BUSY_LOAD_PER_CORE`` per core, at
    either end. Latency budgets are absolute milliseconds: a busy host inflates them."""
    cores = os.cpu_count() or 1
    if before is None or after is None:
        return {"before": before, "after": after, "cores": cores, "busy": None}
    other = max(before[0], after[0]) - 1.0
    return {"before": before, "after": after, "cores": cores,
            "busy": other > BUSY_LOAD_PER_CORE * cores}


def warn_if_busy(load):
    """One stderr line, once per process, when ``host_load`` found the host busy."""
    global _warned_busy
    if load["busy"] and not _warned_busy:
        _warned_busy = True
        print(f"warning: the host was busy while timing (load average "
              f"{max(load['before'][0], load['after'][0]):g} on {load['cores']} cores); "
              "latency figures may be high (the JSON records the load beside each)",
              file=sys.stderr, flush=True)


def measure_latency(tflite_bytes, make_input, preprocess, runs=100, warmup=10,
                    num_threads=1, pause_s=0.0):
    """Time ``runs`` inferences after ``warmup`` untimed ones.

    Per run: ``raw = make_input()`` happens before the timer; total latency is
    ``preprocess(raw)`` + set input + invoke + read output; inference latency is
    invoke + read output (the course's definitions). Returns both summaries and
    the host's load while timing (``host_load``; a busy host is warned about).
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    runner = Runner(tflite_bytes, num_threads=num_threads)
    total, inference = [], []
    load_before = load_average()
    for i in range(warmup + runs):
        raw = make_input()
        start = time.perf_counter()
        features = preprocess(raw)
        runner.set_input(features)
        invoke_start = time.perf_counter()
        runner.interpreter.invoke()
        runner.read_output()
        end = time.perf_counter()
        if i >= warmup:
            total.append(end - start)
            inference.append(end - invoke_start)
            if pause_s:
                time.sleep(pause_s)
    load = host_load(load_before, load_average())
    warn_if_busy(load)
    return {"threads": "default" if num_threads is None else num_threads,
            "total": summarize_ms(total), "inference": summarize_ms(inference),
            "host_load": load}
