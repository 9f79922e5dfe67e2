"""SpecAugment-style masking of feature images (Park et al. 2019, without time
warping): drawn anew for every training batch, so each epoch sees other masks.

The features are cached once per run (``speech.Corpus``); masking them on the fly
adds variety the cached copies cannot, for little time (on b, about 0.4 min more per
seed: the batches go through ``tf.data`` instead of Keras's array feeding).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecAugment:
    """Per example: ``time_masks`` bands of up to ``max_time_width`` consecutive
    frames (rows) and ``freq_masks`` bands of up to ``max_freq_width`` coefficients
    or bins (columns), each width uniform in [0, max], the band's start uniform over
    the positions where it fits. ``fill`` says what masked cells take:

    - ``"example"``: the mean of the whole example (one value per example). That is
      not a neutral frame for MFCCs: c0, the energy, lies far below the image mean
      (about -20 to -28 against -3), so a masked frame is unlike any real one.
    - ``"column"``: each column's mean over the example's frames, SpecAugment's own
      choice (zero after per-coefficient normalization): a masked frame is the
      example's average frame, a masked band is flat in time.

    Frozen and hashable (it is recipe data)."""
    time_masks: int = 2
    max_time_width: int = 5
    freq_masks: int = 1
    max_freq_width: int = 2
    fill: str = "example"

    def __post_init__(self):
        for name, value in vars(self).items():
            if name != "fill" and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.fill not in FILL_AXES:
            raise ValueError(f"fill must be one of {sorted(FILL_AXES)}, got {self.fill!r}")


# What a fill value is the mean over: the axes of a [batch, rows, columns, 1] batch.
FILL_AXES = {"example": [1, 2, 3], "column": [1]}


def band_mask(batch, count, max_width, size, tf):
    """``[batch, size]`` booleans: the union of ``count`` random bands per row."""
    if count == 0 or max_width == 0:
        return tf.zeros([batch, size], tf.bool)
    width = tf.random.uniform([batch, count, 1], 0, max_width + 1, tf.int32)
    width = tf.minimum(width, size)
    start = tf.cast(tf.random.uniform([batch, count, 1]) * tf.cast(size - width + 1,
                                                                   tf.float32), tf.int32)
    position = tf.range(size)[None, None, :]
    return tf.reduce_any((position >= start) & (position < start + width), axis=1)


def masker(spec):
    """A TensorFlow function ``(x, y) -> (masked x, y)`` for batches of
    ``[batch, rows, columns, 1]`` features (``tf.data``'s ``map`` after ``batch``)."""
    import tensorflow as tf

    def mask(x, y):
        shape = tf.shape(x)
        rows = band_mask(shape[0], spec.time_masks, spec.max_time_width, shape[1], tf)
        columns = band_mask(shape[0], spec.freq_masks, spec.max_freq_width, shape[2], tf)
        masked = (rows[:, :, None] | columns[:, None, :])[..., None]
        mean = tf.reduce_mean(x, axis=FILL_AXES[spec.fill], keepdims=True)
        return tf.where(masked, mean, x), y
    return mask
