"""Knowledge distillation from a wider teacher (Hinton et al. 2015), as soft targets.

The teacher is trained once on the same cached training features and its logits
are kept (in memory for the run, and on disk under ``<data-dir>/cache/`` for later
runs and other versions with the same features); the student then trains on
``(1 - weight) * one_hot(label) + weight * softmax(teacher_logits / temperature)``
with ordinary cross-entropy. No teacher runs at inference time: only the student is
converted and shipped.
"""
import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Distillation:
    """How the teacher is made and how much the student listens to it."""
    teacher_alpha: float = 1.0   # the teacher's width multiplier (same architecture)
    weight: float = 0.5          # share of the teacher's distribution in the targets
    temperature: float = 2.0     # softens the teacher's distribution

    def __post_init__(self):
        if not self.teacher_alpha > 0:
            raise ValueError(f"teacher_alpha must be > 0, got {self.teacher_alpha}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def one_hot(labels, n_classes):
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels)]


def soft_targets(labels, teacher_logits, distillation):
    """``[n, classes]`` float32 target distributions (rows sum to 1)."""
    teacher_logits = np.asarray(teacher_logits)
    if len(labels) != len(teacher_logits):
        raise ValueError(f"{len(labels)} labels but {len(teacher_logits)} teacher rows")
    hard = one_hot(labels, teacher_logits.shape[1])
    soft = softmax(teacher_logits, distillation.temperature)
    return ((1.0 - distillation.weight) * hard
            + distillation.weight * soft).astype(np.float32)


def cache_key(**parts):
    """A short digest of everything that decides the teacher's logits (JSON-able)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_digest(array):
    """sha256 of an array's values (for a cache key)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def cache_path(data_dir, name, key):
    return os.path.join(data_dir, "cache", f"{name}_teacher_{key}.npz")


def load_logits(path, rows, classes):
    """The cached logits at ``path`` if present, readable, finite and of shape
    ``(rows, classes)``; else None (a damaged or stale cache is retrained, never
    trusted)."""
    try:
        with np.load(path) as saved:
            logits = saved["logits"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if logits.shape != (rows, classes) or not np.isfinite(logits).all():
        return None
    return logits


def save_logits(path, logits):
    """Write the cache atomically; returns whether it was written. A cache that
    can't be written is only a warning (on stderr). The temporary file never
    outlives the call (not even an interrupt)."""
    tmp = f"{path}.tmp{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(tmp, logits=np.asarray(logits, np.float32))
        os.replace(tmp, path)
        return True
    except OSError as e:
        print(f"warning: teacher cache not written ({e.strerror}: {path})",
              file=sys.stderr, flush=True)
        return False
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
