"""Shared pieces of the tinyml-pipelines training scripts.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (unless already set): the
tensorflow-model-optimization pruning API only works with Keras 2 (``tf_keras``),
and TensorFlow reads the switch when it is first imported. This is the package's
one import-time side effect; import ``common`` before ``tensorflow``.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
