"""TensorFlow Lite Micro: run a .tflite the way a microcontroller firmware does, and
read what a device needs for it: the tensor arena (RAM, from TFLM's recording
allocator), the flash (the raw flatbuffer's bytes) and the ops (each must be one TFLM
registers).

Optional: needs the ``tflite-micro`` package (``requirements-micro.txt``); nothing
imports it unless a micro check is asked for or ``available()`` says it is there.
"""
import importlib.util
import re

import numpy as np

import common
from common.errors import UserError
from common.tflite.runtime import dequantize, quantize

INSTALL_HINT = "pip install -r requirements-micro.txt"
_ARENA_LINE = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


def available():
    return importlib.util.find_spec("tflite_micro") is not None


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise UserError(f"the microcontroller checks need TensorFlow Lite Micro: "
                        f"{INSTALL_HINT}") from None
    return runtime


def op_names(tflite_bytes):
    """The builtin op of every operator in the model, in execution order."""
    runtime = _runtime()
    names = {code: name for name, code in vars(runtime.schema_fb.BuiltinOperator).items()
             if not name.startswith("_")}
    model = runtime.convert_bytearray_to_object(bytearray(tflite_bytes))
    return [names.get(runtime.get_builtin_code_from_operator_code(
                model.operatorCodes[op.opcodeIndex]), "CUSTOM")
            for subgraph in model.subgraphs for op in subgraph.operators]


class MicroRunner:
    """TFLM's interpreter for one model, float samples in, float outputs out (as
    ``runtime.Runner``, so the two can be compared output by output)."""

    def __init__(self, tflite_bytes):
        runtime = _runtime()
        try:
            with common.captured_fd(1) as out, common.captured_fd(2) as err:
                self.interpreter = runtime.Interpreter.from_bytes(bytes(tflite_bytes))
        except (RuntimeError, ValueError) as error:
            missing = sorted(set(_MISSING_OP.findall(out.text + err.text)))
            if missing:
                raise UserError(f"TensorFlow Lite Micro does not support the op "
                                f"{', '.join(missing)} of this model") from None
            raise UserError(f"TensorFlow Lite Micro cannot load the model: "
                            f"{str(error).splitlines()[0]}") from None
        self.input = self.interpreter.get_input_details(0)
        self.output = self.interpreter.get_output_details(0)
        self.input_shape = tuple(int(d) for d in self.input["shape"])

    @staticmethod
    def _scale(details):
        q = details["quantization_parameters"]
        if len(q["scales"]) == 0:
            return 1.0, 0
        return float(q["scales"][0]), int(q["zero_points"][0])

    def __call__(self, x):
        x = np.asarray(x, np.float32).reshape(self.input_shape)
        self.interpreter.set_input(quantize(x, self.input["dtype"],
                                            *self._scale(self.input)), 0)
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_output(0), *self._scale(self.output))[0]

    def predict(self, samples):
        return np.stack([self(sample) for sample in samples])

    def arena_bytes(self):
        """The tensor arena this model used, as TFLM's recording allocator reports it."""
        with common.captured_fd(2) as out:  # TFLM's MicroPrintf writes to stderr
            self.interpreter.print_allocations()
        found = _ARENA_LINE.search(out.text)
        if not found:
            raise RuntimeError(f"TFLM reported no arena total: {out.text[:200]!r}")
        return int(found.group(1))


def agreement(desktop, micro, classifier):
    """How TFLM's outputs compare with the desktop interpreter's: the share of
    identical output vectors, the largest difference, and for a classifier the share
    of identical predicted labels."""
    desktop, micro = np.asarray(desktop), np.asarray(micro)
    result = {"identical_outputs": round(float(np.all(desktop == micro, axis=1).mean()), 4),
              "max_abs_difference": float(np.abs(desktop - micro).max())}
    if classifier:
        result["identical_labels"] = round(float(
            (desktop.argmax(axis=1) == micro.argmax(axis=1)).mean()), 4)
    return result
