"""Magnitude pruning, TFLite conversion with post-training quantization, and the
removal of flatbuffer parts the interpreter does not need."""
import common  # (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow.lite.tools import flatbuffer_utils

QUANTIZATION_MODES = ("float", "int8", "int16x8")
INITIAL_SPARSITY = 0.30
# Layer types are matched exactly, as tfmot's registry does (a subclass of Dense is
# not prunable there). tfmot prunes the kernel of these:
PRUNED_LAYER_TYPES = (keras.layers.Dense, keras.layers.Conv2D)
# tfmot's registry lists these with no prunable weight, so they stay dense:
# DepthwiseConv2D's kernel (in tf_keras it is not a Conv2D subclass; ``prune`` swaps
# it for PrunableDepthwiseConv2D unless ``depthwise=False``) and BatchNormalization's
# per-channel vectors (folded into the conv by the converter).
DENSE_LAYER_TYPES = (keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization)


@keras.utils.register_keras_serializable(package="tinyml")
class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D,
                              tfmot.sparsity.keras.PrunableLayer):
    """A DepthwiseConv2D whose kernel tfmot prunes (tfmot's registry gives the plain
    layer no prunable weight). It lives only between ``prune`` and ``strip``: ``prune``
    puts it in place of each DepthwiseConv2D, ``strip`` puts a plain DepthwiseConv2D
    back with the same config and the pruned weights, so configs, conversion and the
    .tflite op (DEPTHWISE_CONV_2D) are those of the model builders' own layer."""

    def get_prunable_weights(self):
        return [self.depthwise_kernel]


def _retyped(layer, cls):
    """A ``cls`` layer with ``layer``'s config and weights (same name)."""
    twin = cls.from_config(layer.get_config())
    twin.build(layer.get_input_shape_at(0))
    twin.set_weights(layer.get_weights())
    return twin


def prune(model, final_sparsity, begin_step, end_step, frequency=100, depthwise=True):
    """Wrap every prunable layer for magnitude pruning with the reference polynomial
    schedule (0.30 -> ``final_sparsity`` between ``begin_step`` and ``end_step``).
    Returns ``(model, dense_layers)``: the names of the trainable layers whose kernel
    (a weight of rank >= 2) stays dense.

    ``depthwise``: also prune DepthwiseConv2D kernels (the DS-CNN's ``dw1``, ``dw2``)
    through PrunableDepthwiseConv2D, to the same schedule; with False they stay dense
    and are listed in ``dense_layers``, as tfmot alone leaves them. Models without
    depthwise layers (the forecaster) are pruned the same either way.

    Layers marked ``trainable=False`` (the forecaster's persistence skip) are left
    alone. Train the result with ``UpdatePruningStep`` in the callbacks; the weights
    are not sparse until the schedule ends, and the wrappers must be removed with
    ``strip`` before conversion. Masks are updated every ``frequency`` steps from
    ``begin_step``: make ``end_step - begin_step`` a multiple of it so the final
    sparsity is applied. A trainable layer with weights of any other type raises
    ValueError instead of staying dense in silence.
    """
    if not 0 < final_sparsity < 1:
        raise ValueError(f"final sparsity must be in (0, 1), got {final_sparsity}")
    if end_step <= begin_step:
        raise ValueError(f"end_step must be > begin_step ({end_step} <= {begin_step})")
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=min(INITIAL_SPARSITY, final_sparsity),
        final_sparsity=final_sparsity, begin_step=begin_step, end_step=end_step,
        frequency=max(1, frequency))
    dense_layers = []

    def wrap(layer):
        if not layer.trainable or not layer.weights:
            return layer
        if depthwise and type(layer) is keras.layers.DepthwiseConv2D:
            layer = _retyped(layer, PrunableDepthwiseConv2D)
        if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
            pruned = layer.get_prunable_weights()
            if any(len(w.shape) >= 2 and not any(w is p for p in pruned)
                   for w in layer.trainable_weights):
                dense_layers.append(layer.name)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        if type(layer) in PRUNED_LAYER_TYPES:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        if type(layer) in DENSE_LAYER_TYPES:
            if any(len(w.shape) >= 2 for w in layer.weights):
                dense_layers.append(layer.name)
            return layer
        raise ValueError(
            f"prune: layer {layer.name!r} of type {type(layer).__name__} has trainable "
            "weights that optimize.PRUNED_LAYER_TYPES / DENSE_LAYER_TYPES do not cover; "
            "add its type to one of them (tfmot raises ValueError for types its registry "
            "lacks, subclasses included)")

    return keras.models.clone_model(model, clone_function=wrap), dense_layers


def strip(model):
    """Remove the pruning wrappers, and turn each PrunableDepthwiseConv2D back into a
    plain DepthwiseConv2D (a no-op for an unpruned model)."""
    model = tfmot.sparsity.keras.strip_pruning(model)
    if not any(isinstance(layer, PrunableDepthwiseConv2D) for layer in model.layers):
        return model
    return keras.models.clone_model(model, clone_function=lambda layer: (
        _retyped(layer, keras.layers.DepthwiseConv2D)
        if isinstance(layer, PrunableDepthwiseConv2D) else layer))


def weight_sparsity(model):
    """Fraction of zeros in each prunable kernel, by layer name."""
    result = {}
    for layer in model.layers:
        for weight in layer.weights:
            if "kernel" in weight.name and layer.trainable:
                values = weight.numpy()
                result[layer.name] = float((values == 0).mean())
    return result


def with_batch_one(model):
    """A copy of ``model`` whose input has batch size 1: the converter then folds the
    shape arithmetic a dynamic batch needs into constants."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_input_shape"] = (1,) + tuple(
                layer["config"]["batch_input_shape"][1:])
    fixed = keras.Model.from_config(config)
    fixed.set_weights(model.get_weights())
    return fixed


def convert(model, mode, calibration=None):
    """Convert a (stripped) Keras model to TFLite bytes.

    ``mode``: "float" (no quantization), "int8" (full-integer, int8 weights and
    activations, int8 input/output), "int16x8" (int8 weights, int16 activations and
    input/output: 256x finer activations for tiny regressors whose output mixes
    units). ``calibration`` (for the integer modes) is an array of input samples from
    the training or validation split, never the test split.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(with_batch_one(model))
    if mode != "float":
        if calibration is None or len(calibration) == 0:
            raise ValueError(f"{mode} quantization needs calibration samples")
        samples = np.asarray(calibration, np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in samples)
        io_type, ops = {
            "int8": (tf.int8, tf.lite.OpsSet.TFLITE_BUILTINS_INT8),
            "int16x8": (tf.int16, tf.lite.OpsSet
                        .EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8),
        }[mode]
        converter.target_spec.supported_ops = [ops]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    # the converter's native code prints a stray "fully_quantize: 0, inference_type:
    # 6, ..." line to file descriptor 2 for every integer conversion: hidden unless
    # --verbose (replayed if the conversion fails)
    with common.native_stderr_hidden():
        converted = converter.convert()
    return slim(converted)


def slim(tflite_bytes):
    """Drop what the interpreter does not need: tensor and subgraph names, the
    signature, the description, the metadata, and one empty buffer per activation
    tensor (they all share the empty buffer 0 instead). Inference is unchanged; for
    a 1 kB model this removes about a third of the compressed bytes."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    model.description = b""
    model.signatureDefs = []
    model.metadata = []
    kept, new_index = [0], {}
    for subgraph in model.subgraphs:
        subgraph.name = b""
        for tensor in subgraph.tensors:
            tensor.name = b""
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                tensor.buffer = 0
                continue
            if tensor.buffer not in new_index:
                new_index[tensor.buffer] = len(kept)
                kept.append(tensor.buffer)
            tensor.buffer = new_index[tensor.buffer]
    model.buffers = [model.buffers[i] for i in kept]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def round_mantissa(model, bits):
    """Round the float weights of the trainable layers to ``bits`` mantissa bits
    (round to nearest), in place; returns the model.

    The file stays a plain float32 model, but the low bytes of every weight become
    zeros, which zlib compresses away: a sub-2 kB model shrinks by about a sixth at
    8 bits, at a relative weight error of at most 2**-(bits + 1). Frozen layers (the
    forecaster's persistence skip) are left exact.
    """
    if not 1 <= bits <= 23:
        raise ValueError(f"mantissa bits must be in [1, 23], got {bits}")
    drop = 23 - bits
    for layer in model.layers:
        if not layer.trainable or not layer.get_weights():
            continue
        rounded = []
        for weight in layer.get_weights():
            raw = np.asarray(weight, np.float32).view(np.uint32).astype(np.uint64)
            raw = ((raw + (1 << (drop - 1))) >> drop) << drop if drop else raw
            rounded.append(raw.astype(np.uint32).view(np.float32))
        layer.set_weights(rounded)
    return model


TFLITE_TYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


def weight_tensors(tflite_bytes):
    """``(tensor, bytes)`` of every constant tensor of rank >= 2 of a .tflite (the
    weights), in tensor order."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data) > 0 and len(tensor.shape) >= 2:
                yield tensor, bytes(data)


def weight_types(tflite_bytes):
    """The element types of the model's weights, as dtype names: lets tests and
    reports check that weights really are int8."""
    return [TFLITE_TYPES.get(tensor.type, str(tensor.type))
            for tensor, _ in weight_tensors(tflite_bytes)]


def tflite_weight_sparsity(tflite_bytes):
    """The fraction of zeros in each weight tensor of a .tflite, in tensor order:
    ``[{"shape": [...], "type": "int8", "zeros": 0.8}, ...]``.

    Read from the shipped bytes, so it shows what pruning left after stripping,
    folding and quantization (TFLite's int8 weights are symmetric: zero is 0).
    """
    found = []
    for tensor, data in weight_tensors(tflite_bytes):
        type_name = TFLITE_TYPES.get(tensor.type)
        if type_name:
            found.append({"shape": [int(d) for d in tensor.shape], "type": type_name,
                          "zeros": float((np.frombuffer(data, type_name) == 0).mean())})
    return found
