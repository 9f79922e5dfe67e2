"""Jena climate data: loading, the 70/20/10 positional split, normalization, windows.

The protocol is fixed by docs/spec.md so results compare with the reference: windows of
12 consecutive rows (stride 1), the first 6 rows are the input, the last 6 the label;
inputs are normalized with the training split's per-column mean and population std,
labels stay in raw units (degC, %).
"""
import csv
import io
import itertools
import re
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common import artifacts
from common.errors import UserError

COLUMNS = ("T (degC)", "rh (%)")
DATE = "Date Time"
DATE_FORMAT = "%d.%m.%Y %H:%M:%S"  # the station's exports: 01.01.2009 00:10:00
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which some editors put first
URL = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
       "jena_climate_2009_2016.csv.zip")
FILENAME = "jena_climate_2009_2016.csv"
INPUT_STEPS = 6
LABEL_STEPS = 6
TRAIN_END, VAL_END = 0.7, 0.9  # positional split: 70% train, 20% validation, 10% test
NORM_EPSILON = 1e-6


def read_bytes(path):
    """The CSV file's bytes, read once (``--csv <(...)`` works)."""
    return artifacts.read_input(path, "CSV file", "pass --csv PATH or --data-dir DIR "
                                "with a copy of the Jena climate data", "pass --csv PATH")


def load_series(path, content=None):
    """Return the ``[rows, 2]`` float32 array of ``T (degC)`` and ``rh (%)`` from a CSV;
    ``content``, when given, is the file's bytes already read (``path`` then only names
    it in messages).

    Raises UserError for a missing or unreadable file, missing or repeated columns, a
    row with more fields than the header, values that are not finite numbers, and rows
    out of time order or with repeated times (``Date Time``, see ``check_times``).
    """
    if content is None:
        content = read_bytes(path)
    bom = content.startswith(BOM)
    content = content[len(BOM):] if bom else content
    names = _header(path, content, "utf-8" if bom else "latin-1")
    for name in COLUMNS + (DATE,):
        where = [i + 1 for i, n in enumerate(names) if n == name]
        if len(where) > 1:
            raise UserError(f"{path!r} has {len(where)} columns named {name!r} (columns "
                            f"{', '.join(map(str, where))}); keep one")
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise UserError(f"{path!r} has no column {', '.join(map(repr, missing))}; "
                        f"the forecaster needs {COLUMNS[0]!r} and {COLUMNS[1]!r}")
    # Every column is parsed, by position: ``usecols`` would drop a row's extra fields
    # without a word.
    try:
        frame = pd.read_csv(io.BytesIO(content), encoding="latin-1", header=None,
                            skiprows=1, names=range(len(names)),
                            dtype={names.index(DATE): str} if DATE in names else None)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path!r} has a header but no data rows") from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if not found:
            raise UserError(f"cannot read {path!r} as CSV: "
                            f"{str(err).splitlines()[0]}") from None
        header, line, fields = found.groups()
        raise _extra_fields(path, line, fields, header) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas takes the first columns as the index when the first data row has more
        # fields than the header
        line2 = content.split(b"\n", 2)[1].decode("latin-1")
        raise _extra_fields(path, 2, len(next(csv.reader([line2]))), len(names))
    columns = [names.index(c) for c in COLUMNS]
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{path!r} has {int(bad.sum())} missing or non-numeric values in "
                        f"{COLUMNS[col]!r}/..., first at data row {int(row) + 1}")
    if DATE in names:
        check_times(path, frame[names.index(DATE)])
    else:
        print(f"warning: {path!r} has no {DATE!r} column: the rows' time order and "
              "spacing cannot be checked", file=sys.stderr, flush=True)
    return values


def _header(path, content, encoding):
    """The column names on the first line."""
    first = content.split(b"\n", 1)[0].rstrip(b"\r")
    if not first.strip():
        raise UserError(f"cannot read {path!r} as CSV: its first line, the header, is "
                        "empty")
    return next(csv.reader([first.decode(encoding, errors="replace")]))


def _extra_fields(path, line, fields, header):
    return UserError(f"{path!r} line {line} has {fields} fields, the header {header}: "
                     "fix or remove that row")


def check_times(path, column):
    """Check the ``Date Time`` strings (dd.mm.yyyy HH:MM:SS, a pandas Series) of the
    data rows: rows out of time order (reversed, as some exports write them, or
    shuffled) or repeating a time are an error, since a window must be 12 consecutive
    times. Uneven spacing (gaps) is one warning: the windows stay positional, as
    docs/spec.md fixes them."""
    times = pd.to_datetime(column, format=DATE_FORMAT, errors="coerce")
    stamps = column.to_numpy()
    unreadable = np.flatnonzero(times.isna().to_numpy())
    if len(unreadable):
        row = unreadable[0]
        raise UserError(f"{path!r}: {DATE!r} {stamps[row]!r} at data row {row + 1} is "
                        "not dd.mm.yyyy HH:MM:SS")
    steps = np.diff(times.to_numpy()).astype("timedelta64[s]").astype(np.int64)
    back = np.flatnonzero(steps < 0)
    if len(back):
        repeats = len(times) - times.nunique()
        how = ("runs backwards in time (newest row first)" if (steps <= 0).all() else
               f"is not in time order (rows where time goes back: {len(back)}, the first "
               f"data row {back[0] + 2}: {stamps[back[0] + 1]} after {stamps[back[0]]})")
        also = f" and repeats times (rows: {repeats})" if repeats else ""
        raise UserError(f"{path!r} {how}{also}; the windows need the rows in time "
                        f"order: sort it by {DATE}")
    repeated = np.flatnonzero(steps == 0)
    if len(repeated):
        raise UserError(f"{path!r} has duplicate rows (rows repeating the previous row's "
                        f"{DATE}: {len(repeated)}, the first data row {repeated[0] + 2}: "
                        f"{stamps[repeated[0] + 1]}); remove them")
    step = int(np.median(steps)) if len(steps) else 0
    uneven = np.flatnonzero(steps != step)
    if len(uneven):
        longest = uneven[np.argmax(steps[uneven])]
        print(f"warning: {path!r} has gaps (steps between rows other than the usual "
              f"{_duration(step)}: {len(uneven)}, the longest {_duration(steps[longest])} "
              f"after {stamps[longest]}); windows are taken by position, so some span "
              "them", file=sys.stderr, flush=True)


def _duration(seconds):
    """E.g. '10 minutes', '24.7 hours', '3 days'."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:g} seconds"


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
    file: str = ""    # the CSV's file name and sha256 (for the results JSON)
    sha256: str = ""


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
