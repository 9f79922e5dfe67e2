"""What a shipped .tflite carries besides its graph: named metadata entries, such as
the label order of a classifier, so the file itself says what its outputs mean.

Interpreters ignore metadata (TFLite's and TensorFlow Lite Micro's alike); a
classifier's labels cost about 40 bytes of the compressed file.
"""
import common
from common.errors import UserError

LABELS = "labels"


def _flatbuffer_utils():
    common.import_tensorflow()
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils


def with_metadata(tflite_bytes, name, text):
    """``tflite_bytes`` with a metadata entry ``name`` holding ``text`` (UTF-8),
    replacing an entry of that name."""
    fb = _flatbuffer_utils()
    from tensorflow.lite.python import schema_py_generated as schema
    model = fb.convert_bytearray_to_object(bytearray(tflite_bytes))
    buffer = schema.BufferT()
    buffer.data = list(text.encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name.encode(), len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != name.encode()]
    model.metadata.append(entry)
    return bytes(fb.convert_object_to_bytearray(model))


def read_metadata(tflite_bytes, name):
    """The text of metadata entry ``name``, or None when the model has none."""
    model = _flatbuffer_utils().convert_bytearray_to_object(bytearray(tflite_bytes))
    for entry in model.metadata or []:
        if entry.name == name.encode():
            return bytes(model.buffers[entry.buffer].data).decode()
    return None


def with_labels(tflite_bytes, labels):
    """Record the classifier's label order (output index i is ``labels[i]``)."""
    return with_metadata(tflite_bytes, LABELS, "\n".join(labels))


def read_labels(tflite_bytes, path):
    """The label order recorded in the model; a model without one is a UserError
    (``path`` names it)."""
    text = read_metadata(tflite_bytes, LABELS)
    if not text:
        raise UserError(f"{path!r} records no label order (no '{LABELS}' metadata): "
                        "models written by this pipeline carry one; retrain it")
    return text.split("\n")
