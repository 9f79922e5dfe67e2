"""What a shipped .tflite carries besides its graph: named metadata entries, such as
the label order of a classifier, so the file itself says what its outputs mean.

Interpreters ignore metadata (TFLite's and TensorFlow Lite Micro's alike): a
classifier's eight labels cost about 70 bytes of the compressed file, the
forecaster's input statistics about 100 (most of it the entry itself).
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
    """The text of metadata entry ``name``, or None when the model has none. A
    flatbuffer that cannot be parsed is a UserError."""
    try:
        model = _flatbuffer_utils().convert_bytearray_to_object(bytearray(tflite_bytes))
    except Exception as err:  # a truncated flatbuffer raises struct.error and others
        raise UserError(f"the model file is damaged: its flatbuffer cannot be read "
                        f"({type(err).__name__})") from None
    for entry in model.metadata or []:
        if entry.name == name.encode():
            return bytes(model.buffers[entry.buffer].data).decode()
    return None


def with_labels(tflite_bytes, labels):
    """Record the classifier's label order (output index i is ``labels[i]``)."""
    return with_metadata(tflite_bytes, LABELS, "\n".join(labels))


def read_required(tflite_bytes, path, name):
    """Metadata entry ``name``; a model without it is a UserError (``path`` names it)."""
    text = read_metadata(tflite_bytes, name)
    if not text:
        raise UserError(f"{path!r} records no {name} (no '{name}' metadata): models "
                        "written by this pipeline carry it; retrain it")
    return text


def read_labels(tflite_bytes, path):
    """The label order recorded in the model (a UserError when it has none)."""
    return read_required(tflite_bytes, path, LABELS).split("\n")
