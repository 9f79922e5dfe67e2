"""How a keyword-spotting version is trained: the DS-CNN fit (with masking, pruning
and, when the recipe asks, soft targets from a teacher whose logits are cached), then
the int8 conversion calibrated on training clips only."""
import dataclasses
import os
import time

import numpy as np

from common.kws import distill

CALIBRATION_CLIPS = 400


TEACHER_CACHE_VERSION = 1  # bump when the teacher's training changes in code


# Recipe fields that do not change the teacher's logits: the budgets (max_*, min_*)
# and what only the student uses (the teacher is dense, unquantized, undistilled).
TEACHER_IGNORES = ("sparsity", "prune_epochs", "prune_depthwise", "quantization",
                   "distillation")


def teacher_cache_key(teacher, data, features):
    """What decides the teacher's logits: every field of its recipe but the budgets
    and the student-only ones (``TEACHER_IGNORES``), so a field added to KwsRecipe
    keys the cache unless listed there; the training and validation clips, labels
    and targets (validation picks its epoch), and the seed. Versions that differ
    only in budgets or in the student share one teacher."""
    recipe = {name: value for name, value in dataclasses.asdict(teacher).items()
              if not name.startswith(("max_", "min_")) and name not in TEACHER_IGNORES}
    recipe["first_stride"] = teacher.first_strides()  # None means a kind's default
    clips = data.load(teacher.features.sample_rate)
    return distill.cache_key(
        version=TEACHER_CACHE_VERSION, recipe=recipe, labels=data.labels,
        clips={s: clips.sha256[s] for s in ("train", "val")},
        targets={s: distill.array_digest(getattr(features, s)[1])
                 for s in ("train", "val")},
        seed=data.seed)


def fit_ds_cnn(recipe, features, targets, seed, verbose, model=None):
    """``(keras model, fit info)``: the recipe's DS-CNN (or ``model``, trained on)
    trained (and pruned) on the training features with ``targets`` (integer labels,
    or distributions when distilling), the best validation epoch kept."""
    import tf_keras as keras
    from common.kws import model as kws_model
    from common.kws import specaugment
    from common.tflite import training
    training.set_seed(seed)
    soft = targets.ndim == 2
    val = features.val
    if soft:
        val = (val[0], distill.one_hot(val[1], targets.shape[1]))
    loss = (keras.losses.CategoricalCrossentropy if soft
            else keras.losses.SparseCategoricalCrossentropy)(from_logits=True)
    if model is None:
        model = kws_model.ds_cnn(recipe.alpha, recipe.features.shape,
                                 recipe.first_strides(), n_classes=len(features.labels),
                                 blocks=recipe.blocks)
    return training.fit(
        model,
        (features.train[0], targets), val, recipe, loss=loss, metrics=["accuracy"],
        verbose=2 if verbose else 0, batch_transform=None if recipe.spec_augment is None
        else specaugment.masker(recipe.spec_augment))


class Teachers:
    """The distillation teachers' logits of one run, by cache path: every seed and
    every version with the same features, augmentation and training schedule shares
    them."""

    def __init__(self):
        self.logits = {}  # cache path -> (teacher's logits on the training split, info)

    def get(self, recipe, data, features, verbose):
        """The teacher's logits on ``features.train`` (the run's cached features,
        ``data.data(recipe)``): trained once (dense, at
        ``teacher_alpha``, with the run's seed) and cached in memory and under
        ``<data-dir>/cache/``; every seed and every version with the same features,
        augmentation and training schedule shares them. Returns ``(logits, info)``;
        ``info["seconds"]`` is the teacher's training time, None when it was cached."""
        teacher = dataclasses.replace(recipe, alpha=recipe.distillation.teacher_alpha,
                                      sparsity=0.0, distillation=None)
        path = distill.cache_path(data.data_dir, "kws",
                                  teacher_cache_key(teacher, data, features))
        if path not in self.logits:
            logits = distill.load_logits(path, len(features.train[0]), len(data.labels))
            info = {"alpha": teacher.alpha, "cache": os.path.basename(path),
                    "seconds": None}
            if logits is None:
                start = time.time()
                print(f"training the teacher (alpha {teacher.alpha}) ...", flush=True)
                model, fit_info = fit_ds_cnn(teacher, features, features.train[1],
                                             data.seed, verbose)
                logits = model.predict(features.train[0], batch_size=256, verbose=0)
                cached = distill.save_logits(path, logits)
                info.update(seconds=round(time.time() - start, 1),
                            best_val_loss=fit_info["best_val_loss"],
                            cache=info["cache"] if cached else None)
                print(f"teacher trained in {info['seconds']:.0f} s; " + (
                    f"logits cached in {path}" if cached else
                    "logits kept for this run only"), flush=True)
            else:
                print(f"teacher logits from {path}", flush=True)
            self.logits[path] = logits, info
        return self.logits[path]


MINING_HOP_S = 0.2
MINING_SEED = 9173


def fired_windows(probs, mask, threshold):
    """Indices of the windows whose best keyword output (``mask``) reaches
    ``threshold``: the ones a detector would fire on."""
    return np.flatnonzero(np.where(mask, probs, 0.0).max(axis=1) >= threshold)


def stream_windows(signal, config, hop_s):
    """Features of every 1-s window of ``signal``, ``hop_s`` apart."""
    from common.kws import audio
    hop, length = int(round(hop_s * config.sample_rate)), config.clip_samples
    return np.stack([audio.extract(config, signal[end - length:end])
                     for end in range(length, len(signal) + 1, hop)])


def mine_hard_negatives(model, recipe, data, features, seed, round_index):
    """``(features, count)``: the windows of keyword-free speech in the training
    voices (``stream.make_recording`` without keywords: speech, music, noise) that
    the model fires on, to be added as unknown speech."""
    from common.kws import stream
    negs = recipe.negatives
    clips = data.load(recipe.features.sample_rate).splits["train"]
    rec = stream.make_recording("mining", clips[0], clips[1], recipe.features.sample_rate,
                                negs.mining_minutes * 60,
                                np.random.default_rng([MINING_SEED, seed, round_index]),
                                keywords=False,
                                speech=data.synthesized("train", negs.synth_plan))
    windows = stream_windows(rec.signal, recipe.features, MINING_HOP_S)
    probs = stream.softmax(model.predict(windows, batch_size=512, verbose=0))
    picked = fired_windows(probs, stream.keyword_mask(data.labels), negs.mining_threshold)
    return windows[picked], len(windows)


def tune_on_mined(model, recipe, data, features, seed, verbose):
    """``(model, info)``: ``recipe.negatives.mining_rounds`` rounds of mining and
    training on, each adding what the model fired on (``mine_hard_negatives``)."""
    from common.kws import negatives
    negs, info = recipe.negatives, []
    unknown = data.labels.index(negatives.UNKNOWN)
    x, y = features.train
    for r in range(negs.mining_rounds):
        mined, listened = mine_hard_negatives(model, recipe, data, features, seed, r)
        print(f"hard-negative mining, round {r + 1}: {len(mined)} of {listened} windows of "
              f"keyword-free speech fired; training on", flush=True)
        x = np.concatenate([x, mined])
        y = np.concatenate([y, np.full(len(mined), unknown, np.int64)])
        tuned = dataclasses.replace(recipe, epochs=negs.mining_epochs,
                                    learning_rate=recipe.learning_rate * 0.1,
                                    lr_drop_epochs=())
        model, fit_info = fit_ds_cnn(tuned, dataclasses.replace(features, train=(x, y)),
                                     y, seed, verbose, model)
        info.append({"windows": listened, "fired": len(mined),
                     "best_val_loss": fit_info["best_val_loss"]})
    return model, info


def train(recipe, data, seed, verbose, teachers):
    """``(model, tflite_bytes, fit_info)``: train (and prune) the DS-CNN, keep the best
    validation epoch, convert to int8 calibrated on training clips only; with
    distillation, on soft targets from ``teachers`` (a ``Teachers``)."""
    from common.tflite import optimize
    features = data.data(recipe)  # augmented once per run: the seeds share it
    targets, teacher = features.train[1], None
    if recipe.distillation is not None:
        logits, teacher = teachers.get(recipe, data, features, verbose)
        targets = distill.soft_targets(targets, logits, recipe.distillation)
    model, fit_info = fit_ds_cnn(recipe, features, targets, seed, verbose)
    fit_info["teacher"] = teacher
    if recipe.negatives is not None and recipe.negatives.mining_rounds:
        model, fit_info["mining"] = tune_on_mined(model, recipe, data, features, seed,
                                                  verbose)
    picks = np.linspace(0, len(features.train[0]) - 1, CALIBRATION_CLIPS, dtype=int)
    return model, optimize.convert(model, recipe.quantization,
                                   features.train[0][picks]), fit_info
