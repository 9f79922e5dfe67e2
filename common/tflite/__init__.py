"""From a Keras model to a checked file on a device, shared by every task: the
pruning-aware training loop, pruning and conversion (``optimize``), the metadata a
``.tflite`` carries (``tflite_file``), the desktop interpreter and latency
(``runtime``), TensorFlow Lite Micro (``micro``) and the C export. Nothing here
knows a task."""
