"""SpecAugment masking and distillation from a cached teacher (issue 10)."""
import dataclasses
import os
from types import SimpleNamespace

import numpy as np
import pytest

import kws_train
from common.kws import distill, specaugment
from common.kws import train as kws_train_module
from common.kws.distill import Distillation
from common.kws.specaugment import SpecAugment
from common.tflite import training
from conftest import LABELS
from test_model_guards import fit_ds_cnn, kws_argv, run_cli, textures, tone_dataset


# --- SpecAugment ----------------------------------------------------------------

def masked_bands(original, masked):
    """Per example: (masked rows, masked columns, every changed cell == the mean)."""
    out = []
    for x, m in zip(original[..., 0], masked[..., 0]):
        mean = x.mean()
        rows = [i for i in range(x.shape[0]) if np.allclose(m[i], mean, atol=1e-5)]
        cols = [j for j in range(x.shape[1]) if np.allclose(m[:, j], mean, atol=1e-5)]
        changed = m != x
        expected = np.zeros_like(changed)
        expected[rows, :] = True
        expected[:, cols] = True
        out.append((rows, cols, np.array_equal(changed, expected)
                    and np.allclose(m[changed], mean, atol=1e-5)))
    return out


def runs(indices):
    """Lengths of the runs of consecutive integers in a sorted list."""
    lengths = []
    for i, index in enumerate(indices):
        if i and index == indices[i - 1] + 1:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def test_specaugment_masks_bands_of_bounded_width_with_the_example_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, (200, 20, 10, 1)).astype(np.float32)
    y = np.arange(200)
    spec = SpecAugment(time_masks=2, max_time_width=4, freq_masks=1, max_freq_width=3)
    masked, y_out = (np.asarray(t) for t in specaugment.masker(spec)(x, y))
    np.testing.assert_array_equal(y_out, y)
    bands = masked_bands(x, masked)
    assert all(ok for _, _, ok in bands)  # only whole rows/columns, set to the mean
    for rows, _, _ in bands:  # two bands of <= 4 rows: apart, or one merged run
        lengths = runs(rows)
        assert len(lengths) <= 2 and sum(lengths) <= 8
        assert len(lengths) <= 1 or max(lengths) <= 4
    assert all(len(cols) <= 3 and len(runs(cols)) <= 1 for _, cols, _ in bands)
    # widths are uniform in [0, max]: most examples get a band of each kind, not all
    with_rows = sum(bool(rows) for rows, _, _ in bands)
    with_cols = sum(bool(cols) for _, cols, _ in bands)
    assert 150 < with_rows < 200 and 100 < with_cols < 200
    assert max(len(rows) for rows, _, _ in bands) >= 6
    # drawn anew on every call (every batch)
    again = np.asarray(specaugment.masker(spec)(x, y)[0])
    assert not np.array_equal(again, masked)


def test_specaugment_column_fill_takes_each_columns_own_mean():
    """With ``fill="column"`` a masked frame is the example's average frame: on
    columns of very different levels (like MFCC c0 and the rest), each masked cell
    takes its own column's mean, not the example's."""
    rng = np.random.default_rng(2)
    x = (rng.normal(0.0, 1.0, (100, 20, 6, 1)) + 10.0 * np.arange(6)[None, None, :, None]
         ).astype(np.float32)
    spec = SpecAugment(time_masks=2, max_time_width=4, freq_masks=1, max_freq_width=2,
                       fill="column")
    masked = np.asarray(specaugment.masker(spec)(x, np.zeros(100))[0])
    changed = masked != x
    assert changed.any(axis=(1, 2, 3)).mean() > 0.8
    column_means = np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape)
    np.testing.assert_allclose(masked[changed], column_means[changed], atol=1e-4)


def test_specaugment_without_masks_is_the_identity_and_rejects_bad_settings():
    x = np.random.default_rng(1).normal(size=(4, 8, 5, 1)).astype(np.float32)
    masked, _ = specaugment.masker(SpecAugment(0, 3, 2, 0))(x, np.zeros(4))
    np.testing.assert_array_equal(np.asarray(masked), x)
    with pytest.raises(ValueError, match="time_masks"):
        SpecAugment(time_masks=-1)
    with pytest.raises(ValueError, match="max_freq_width"):
        SpecAugment(max_freq_width=1.5)
    with pytest.raises(ValueError, match="fill"):
        SpecAugment(fill="zero")


def test_fit_applies_the_batch_transform_to_training_batches():
    train, val = textures(256, 0), textures(64, 1)

    def blank(x, y):  # a model that only ever sees zeros learns nothing
        return x * 0.0, y

    def accuracy(model):
        return (model.predict(val[0], verbose=0).argmax(axis=1) == val[1]).mean()

    blind_model, blind = fit_ds_cnn(train, val, epochs=5, batch_size=16,
                                    batch_transform=blank)
    masked_model, _ = fit_ds_cnn(train, val, epochs=5, batch_size=16,
                                 batch_transform=specaugment.masker(SpecAugment(1, 2, 1, 1)))
    plain_model, _ = fit_ds_cnn(train, val, epochs=5, batch_size=16)
    assert min(blind["val_loss"]) > np.log(4) - 0.05  # chance: uniform over 4 classes
    assert accuracy(blind_model) <= 0.4
    assert accuracy(masked_model) >= 0.9 and accuracy(plain_model) >= 0.9


# --- distillation -----------------------------------------------------------------

def test_soft_targets_mix_the_label_and_the_softened_teacher():
    labels = np.array([0, 2, 1])
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 4.0], [3.0, 1.0, 0.0]])
    mixed = distill.soft_targets(labels, logits, Distillation(weight=0.3, temperature=2.0))
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        mixed, 0.7 * np.eye(3)[labels] + 0.3 * distill.softmax(logits / 2.0), rtol=1e-6)
    np.testing.assert_array_equal(
        distill.soft_targets(labels, logits, Distillation(weight=0.0)), np.eye(3)[labels])
    teacher_only = distill.soft_targets(labels, logits, Distillation(weight=1.0,
                                                                     temperature=1.0))
    assert teacher_only[2].argmax() == 0  # the teacher's view, not the label's
    with pytest.raises(ValueError, match="3 labels but 2 teacher rows"):
        distill.soft_targets(labels, logits[:2], Distillation())
    for bad in ({"weight": 1.5}, {"temperature": 0}, {"teacher_alpha": -1}):
        with pytest.raises(ValueError):
            Distillation(**bad)


def test_teacher_cache_round_trips_and_distrusts_damaged_or_stale_files(tmp_path, capsys):
    path = distill.cache_path(str(tmp_path), "kws", distill.cache_key(a=1))
    logits = np.arange(12, dtype=np.float32).reshape(4, 3)
    distill.save_logits(path, logits)
    np.testing.assert_array_equal(distill.load_logits(path, 4, 3), logits)
    assert distill.load_logits(path, 5, 3) is None  # another training set: stale
    assert distill.load_logits(path, 4, 2) is None  # another label set
    distill.save_logits(path, np.where(logits > 10, np.nan, logits))
    assert distill.load_logits(path, 4, 3) is None  # a diverged teacher
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert distill.load_logits(path, 4, 3) is None
    assert distill.load_logits(str(tmp_path / "missing.npz"), 4, 3) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    distill.save_logits(str(blocked / "cache" / "x.npz"), logits)  # a file as folder
    assert "warning: teacher cache not written" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["cache", "file"]
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]  # no temp file


class FakeCorpus:
    """What ``teacher_cache_key`` reads of a ``speech.Corpus``."""

    def __init__(self, labels=tuple(LABELS), train_sha="t", val_sha="v", seed=0):
        self.labels, self.seed = list(labels), seed
        self.clips = SimpleNamespace(sha256={"train": train_sha, "val": val_sha})

    def load(self, sample_rate):
        return self.clips


def test_teacher_cache_key_changes_with_what_changes_the_teacher_only():
    recipe = dataclasses.replace(kws_train.RECIPES["b"], distillation=Distillation())
    teacher = dataclasses.replace(recipe, alpha=1.0, distillation=None)
    y = np.arange(16) % 8
    features = SimpleNamespace(train=(None, y), val=(None, y[:8]))

    def key(teacher=teacher, data=FakeCorpus(), features=features):
        return kws_train_module.teacher_cache_key(teacher, data, features)

    base = key()
    relabelled = SimpleNamespace(train=(None, np.roll(y, 1)), val=features.val)
    changed = [key(data=FakeCorpus(val_sha="v2")), key(data=FakeCorpus(train_sha="t2")),
               key(data=FakeCorpus(seed=1)), key(features=relabelled),
               key(features=SimpleNamespace(train=features.train, val=(None, y[1:9]))),
               key(data=FakeCorpus(labels=LABELS[::-1])),
               key(teacher=dataclasses.replace(teacher, alpha=0.5)),
               key(teacher=dataclasses.replace(teacher, spec_augment=None)),
               key(teacher=dataclasses.replace(teacher, epochs=10))]
    assert base not in changed and len(set(changed)) == len(changed)
    # budgets and the student's own settings do not retrain the teacher
    assert key(teacher=dataclasses.replace(teacher, max_zlib_bytes=1,
                                           max_inference_ms=None)) == base


def test_kws_trains_the_teacher_once_and_distills_label_aligned_targets(
        tmp_path, monkeypatch, capsys):
    """Two seeds and a second run share one teacher (trained once, then read from
    data/cache); the students' targets put the teacher's mass on the right label."""
    data_dir = tone_dataset(tmp_path / "speech", {"train": 6, "val": 2, "test": 2})
    recipe = dataclasses.replace(kws_train.RECIPES["b"], distillation=Distillation(
        teacher_alpha=0.2, weight=1.0, temperature=1.0), learning_rate=0.01)
    monkeypatch.setitem(kws_train.RECIPES, "b", recipe)
    calls = []
    real_fit = kws_train_module.fit_ds_cnn

    def spy(recipe, features, targets, seed, verbose):
        calls.append((recipe.alpha, targets))
        return real_fit(recipe, features, targets, seed, verbose)

    monkeypatch.setattr(kws_train_module, "fit_ds_cnn", spy)
    argv = ["--version", "b", *kws_argv(data_dir, tmp_path / "out", "--epochs", "12",
                                        "--alpha", "0.1", "--seeds", "0,1")]
    code, _ = run_cli(kws_train.main, argv, capsys)
    assert code in (0, 3)
    assert [alpha for alpha, _ in calls] == [0.2, 0.1, 0.1]  # teacher, then 2 students
    labels = calls[0][1]
    for _, targets in calls[1:]:
        assert targets.shape == (len(labels), len(LABELS))
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
        # aligned rows: the teacher agrees with most labels (chance is 1 in 8)
        assert (targets.argmax(axis=1) == labels).mean() >= 0.5
    assert len(os.listdir(data_dir / "cache")) == 1
    calls.clear()
    code, out = run_cli(kws_train.main, argv, capsys)
    assert [alpha for alpha, _ in calls] == [0.1, 0.1] and "teacher logits from" in out
