"""Training loop pieces shared by both pipelines: the step learning-rate schedule,
best-on-validation checkpoint selection, and pruning-aware fitting."""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import dataclasses
import math
import random

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from common.errors import raise_pending_stop, stops_at_safe_points
from common.tflite import optimize


def set_seed(seed):
    """Seed Python, numpy and TensorFlow so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)


def step_schedule(initial_lr, drop_epochs, factor=0.1):
    """Learning rate ``initial_lr``, multiplied by ``factor`` at each epoch in
    ``drop_epochs`` (the reference's "LR 0.1 /10 at epochs 10, 50, 60")."""
    def lr_at(epoch, _lr=None):
        return initial_lr * factor ** sum(epoch >= e for e in drop_epochs)
    return lr_at


class BestOnValidation(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` and restore them at
    the end, considering only epochs from ``first_epoch`` on (with pruning: the
    epochs after the schedule reached its final sparsity, so selection cannot bring
    back a denser model)."""

    def __init__(self, monitor="val_loss", first_epoch=0):
        super().__init__()
        self.monitor, self.first_epoch = monitor, first_epoch
        self.best, self.best_epoch, self.best_weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and epoch >= self.first_epoch and value < self.best:
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class StopWhenAsked(keras.callbacks.Callback):
    """End training at the next batch after a Ctrl-C or SIGTERM whose exception
    TensorFlow lost (see ``errors.stop_on_signal``)."""
    _supports_tf_logs = True  # the logs stay tensors: no sync with the graph per batch

    def on_train_batch_end(self, batch, logs=None):
        raise_pending_stop()

    on_test_batch_end = on_train_batch_end


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How ``fit`` trains: the epochs, the batch size, Adam at ``learning_rate`` divided
    by 10 at each of ``lr_drop_epochs``, and magnitude pruning to ``sparsity`` from
    ``prune_epochs[0]`` to ``prune_epochs[1]`` (DepthwiseConv2D kernels too when
    ``prune_depthwise``). A recipe holds these fields under the same names."""
    epochs: int
    batch_size: int
    learning_rate: float
    lr_drop_epochs: tuple = ()
    sparsity: float = 0.0
    prune_epochs: tuple = (0, 1)
    prune_depthwise: bool = True

    @classmethod
    def of(cls, recipe):
        """The training fields of ``recipe`` (any object holding them by name; a
        field it lacks takes its default)."""
        return cls(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(cls)
                      if hasattr(recipe, f.name)})


def fit(model, train, val, settings, *, loss, metrics=(), verbose=1, batch_transform=None):
    """Train (and prune, when ``settings.sparsity`` > 0) and return
    ``(stripped_model, info)``.

    ``settings``: a ``TrainingSettings`` or a recipe with its fields (read through
    ``TrainingSettings.of``). ``train`` and ``val`` are ``(x, y)`` arrays. Pruning
    runs from ``prune_epochs[0]`` to ``prune_epochs[1]`` (clipped to the run's
    length); the best validation epoch is chosen after it. ``prune_depthwise``: prune
    DepthwiseConv2D kernels too (see ``optimize.prune``). ``info``: the kept epoch
    (1-based) and its validation loss, the validation loss of every epoch, and
    ``dense_layers``, the trainable layers whose kernel pruning left dense (None
    without pruning).

    ``batch_transform``: a TensorFlow function ``(x, y) -> (x, y)`` applied to each
    shuffled training batch, drawn anew every epoch (``specaugment.masker``); the
    validation data is never transformed. ``train[1]`` may hold integer labels or
    per-class target distributions (distillation); ``loss`` must match.
    """
    s = TrainingSettings.of(settings)
    epochs, batch_size, sparsity, prune_epochs = (s.epochs, s.batch_size, s.sparsity,
                                                  s.prune_epochs)
    steps_per_epoch = math.ceil(len(train[0]) / batch_size)
    callbacks = [keras.callbacks.LearningRateScheduler(
        step_schedule(s.learning_rate, s.lr_drop_epochs)), StopWhenAsked()]
    first_epoch, dense_layers = 0, None
    if sparsity > 0:
        end = max(1, min(prune_epochs[1], epochs - 1))
        begin = min(prune_epochs[0], end - 1)
        model, dense_layers = optimize.prune(model, sparsity, begin * steps_per_epoch,
                                             end * steps_per_epoch,
                                             frequency=steps_per_epoch,
                                             depthwise=s.prune_depthwise)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
        first_epoch = min(end, epochs - 1)
    best = BestOnValidation(first_epoch=first_epoch)
    callbacks.append(best)
    model.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss=loss,
                  metrics=list(metrics))
    if batch_transform is None:
        inputs = {"x": train[0], "y": train[1], "batch_size": batch_size, "shuffle": True}
    else:
        inputs = {"x": tf.data.Dataset.from_tensor_slices(train)
                  .shuffle(len(train[0]), reshuffle_each_iteration=True)
                  .batch(batch_size).map(batch_transform).prefetch(2)}
    with stops_at_safe_points():  # StopWhenAsked raises a stop at the batch's end
        history = model.fit(**inputs, epochs=epochs, callbacks=callbacks,
                            verbose=verbose, validation_data=val,
                            validation_batch_size=batch_size)
    info = {"best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
            "best_val_loss": None if best.best_epoch is None else float(best.best),
            "epochs_run": len(history.history.get("loss", [])),
            "val_loss": [float(v) for v in history.history.get("val_loss", [])],
            "dense_layers": dense_layers}
    return optimize.strip(model), info
