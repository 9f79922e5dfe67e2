"""Jena climate data: loading, the 70/20/10 positional split, normalization, windows.

The protocol is fixed by SPEC.md so results compare with the reference: windows of
12 consecutive rows (stride 1), the first 6 rows are the input, the last 6 the label;
inputs are normalized with the training split's per-column mean and population std,
labels stay in raw units (degC, %).
"""
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.errors import UserError

COLUMNS = ("T (degC)", "rh (%)")
URL = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
       "jena_climate_2009_2016.csv.zip")
FILENAME = "jena_climate_2009_2016.csv"
INPUT_STEPS = 6
LABEL_STEPS = 6
TRAIN_END, VAL_END = 0.7, 0.9  # positional split: 70% train, 20% validation, 10% test
NORM_EPSILON = 1e-6


def load_series(path):
    """Return the ``[rows, 2]`` float32 array of ``T (degC)`` and ``rh (%)`` from a CSV.

    Raises UserError for a missing or unreadable file, missing columns, or values that
    are not finite numbers.
    """
    try:
        frame = pd.read_csv(path, encoding="latin-1", usecols=lambda c: c in COLUMNS)
    except FileNotFoundError:
        raise UserError(f"CSV file {path!r} does not exist; pass --csv PATH or --data-dir "
                        "DIR with a copy of the Jena climate data") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path!r} as CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path!r} has no column {', '.join(map(repr, missing))}; "
                        f"the forecaster needs {COLUMNS[0]!r} and {COLUMNS[1]!r}")
    values = frame[list(COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{path!r} has {int(bad.sum())} missing or non-numeric values in "
                        f"{COLUMNS[col]!r}/..., first at data row {int(row) + 1}")
    return values


def split_sizes(n):
    """Rows of the train, validation and test splits of ``n`` rows."""
    train_end, val_end = int(n * TRAIN_END), int(n * VAL_END)
    return train_end, val_end - train_end, n - val_end


def min_rows():
    """The fewest rows for which every split holds one window: 111 for 70/20/10 and
    12-row windows (the tests check that every larger count works too)."""
    window = INPUT_STEPS + LABEL_STEPS
    return next(n for n in itertools.count(window) if min(split_sizes(n)) >= window)


def split(series):
    """Positional 70/20/10 split, no shuffling. Raises UserError when a split is shorter
    than one window."""
    train, val, _ = split_sizes(len(series))
    parts = series[:train], series[train:train + val], series[train + val:]
    window = INPUT_STEPS + LABEL_STEPS
    if min(len(p) for p in parts) < window:
        raise UserError(f"{len(series)} rows are too few: each of the train/validation/"
                        f"test splits needs at least {window} rows (one window), so the "
                        f"CSV needs at least {min_rows()} rows; pass the full Jena "
                        "climate CSV")
    return parts


@dataclass(frozen=True)
class Normalizer:
    """Per-column statistics of the training split: ``(x - mean) / (std + 1e-6)``."""
    mean: tuple
    std: tuple

    @classmethod
    def fit(cls, train):
        return cls(tuple(float(v) for v in train.mean(axis=0)),
                   tuple(float(v) for v in train.std(axis=0)))

    def __call__(self, values):
        return ((values - np.array(self.mean, np.float32))
                / (np.array(self.std, np.float32) + NORM_EPSILON)).astype(np.float32)


def make_windows(part, normalizer):
    """All stride-1 windows of one split: inputs ``[n, 6, 2]`` normalized, labels
    ``[n, 6, 2]`` raw."""
    window = INPUT_STEPS + LABEL_STEPS
    index = np.arange(len(part) - window + 1)[:, None] + np.arange(window)
    windows = part[index]
    return normalizer(windows[:, :INPUT_STEPS]), windows[:, INPUT_STEPS:].astype(np.float32)


@dataclass
class ForecastData:
    """Windows of the three splits plus the statistics used to make them."""
    normalizer: Normalizer
    train: tuple
    val: tuple
    test: tuple
    rows: int


def prepare(series, normalizer=None):
    """Windows of the three splits, inputs normalized with ``normalizer`` (a model's
    own, under --evaluate) or, by default, the training split's statistics."""
    train, val, test = split(series)
    normalizer = normalizer or Normalizer.fit(train)
    return ForecastData(normalizer, make_windows(train, normalizer),
                        make_windows(val, normalizer), make_windows(test, normalizer),
                        len(series))


def mae_per_variable(predicted, labels):
    """Mean absolute error per variable over all windows and steps: shape ``[2]``."""
    return np.abs(np.asarray(predicted, np.float64).reshape(-1, 2)
                  - np.asarray(labels, np.float64).reshape(-1, 2)).mean(axis=0)
