import datetime
import hashlib
import os
import random
import re
import threading

import numpy as np
import pytest

from common.errors import UserError
from common.forecast import jena
from conftest import START, write_jena_csv


def test_windows_shapes_and_split_boundaries():
    series = np.arange(200 * 2, dtype=np.float32).reshape(200, 2)
    data = jena.prepare(series)
    # 70/20/10 of 200 rows = 140/40/20 rows -> rows - 11 windows each
    assert data.train[0].shape == (129, 6, 2) and data.train[1].shape == (129, 6, 2)
    assert len(data.val[0]) == 29 and len(data.test[0]) == 9
    # labels are raw and follow their inputs; the test split starts at row 180
    assert data.test[1][0, 0, 0] == series[186, 0]
    assert data.val[1][-1, -1, 1] == series[179, 1]
    # the last training window ends inside the training split (row 139)
    assert data.train[1][-1, -1, 0] == series[139, 0]


def test_normalization_uses_training_split_only():
    rng = np.random.default_rng(0)
    series = rng.normal(size=(300, 2)).astype(np.float32)
    changed = series.copy()
    changed[210:] += 100.0  # only validation and test rows change
    a, b = jena.prepare(series), jena.prepare(changed)
    assert a.normalizer == b.normalizer
    train = series[:210]
    np.testing.assert_allclose(a.normalizer.mean, train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(a.normalizer.std, train.std(0), rtol=1e-5)  # population std
    expected = (train[:6] - train.mean(0)) / (train.std(0) + 1e-6)
    np.testing.assert_allclose(a.train[0][0], expected, rtol=1e-4, atol=1e-5)


def test_mae_against_hand_computed_case():
    labels = np.zeros((2, 6, 2))
    predicted = np.zeros((2, 6, 2))
    predicted[0, :, 0] = 1.0           # T off by 1 in half the windows
    predicted[:, 0, 1] = -3.0          # RH off by 3 at one step of each window
    np.testing.assert_allclose(jena.mae_per_variable(predicted, labels), [0.5, 0.5])


def test_load_series_reads_latin1_export(tmp_path):
    path = write_jena_csv(tmp_path / "x.csv", 50)
    values = jena.load_series(str(path))
    assert values.shape == (50, 2) and values.dtype == np.float32


def test_load_series_reads_a_latin1_header_with_non_ascii_names(tmp_path):
    # the station's newer exports name columns with latin-1 "°", "²" and "µ"
    header = "Date Time,p (mbar),T (degC),Tlog (°C),rh (%),rho (g/m³),PAR (µmol/m²/s)\n"
    rows = ["01.01.2024 00:10:00,990.1,-1.5,-1.2,93.5,1307.8,0.5\n",
            "01.01.2024 00:20:00,990.2,-1.75,-1.4,94.25,1309.1,0.25\n"]
    path = tmp_path / "mpi_roof.csv"
    path.write_bytes((header + "".join(rows)).encode("latin-1"))
    assert b"\xb0" in path.read_bytes()  # not valid UTF-8
    values = jena.load_series(str(path))
    np.testing.assert_array_equal(values, np.float32([[-1.5, 93.5], [-1.75, 94.25]]))


@pytest.mark.parametrize("content, message", [
    ("Date Time,T (degC)\n01.01.2024 00:00:00,1.0\n", r"no column 'rh \(%\)'"),
    ("T (degC),rh (%)\n1.0,50\n2.0,\n", "non-numeric .* in 'rh .*, first at data row 2$"),
    ("T (degC),rh (%)\n1.0,50\nwarm,50\n", "non-numeric .* in 'T .*, first at data row 2$"),
    ("", "cannot read"),
])
def test_bad_csv_content(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        jena.load_series(str(path))
    assert "np." not in str(err.value)


def test_missing_file():
    with pytest.raises(UserError, match="does not exist"):
        jena.load_series("/nonexistent/jena.csv")


def test_too_few_rows_message_states_the_real_minimum():
    window = jena.INPUT_STEPS + jena.LABEL_STEPS
    assert jena.min_rows() == 111  # 70/20/10 of 111 rows = 77/22/12
    with pytest.raises(UserError, match="110 rows are too few: .* needs at least 111 rows; "
                                        "pass the full") as err:
        jena.split(np.zeros((110, 2), np.float32))  # test split: 11 rows < 12
    assert "np." not in str(err.value)
    assert [len(p) for p in jena.split(np.zeros((111, 2), np.float32))] == [77, 22, 12]
    for n in range(jena.min_rows(), 3000):  # and every longer series splits as well
        assert min(len(p) for p in jena.split(np.zeros((n, 2), np.float32))) >= window
    for n in range(jena.min_rows()):
        with pytest.raises(UserError, match="needs at least 111 rows"):
            jena.split(np.zeros((n, 2), np.float32))


# --- the CSV's own structure and time order (issue 19) ---

HEADER = "Date Time,p (mbar),T (degC),rh (%)\n"


def rows(count, start=0, step_minutes=10):
    """Station-like data rows ``Date Time,p,T,RH``; row i has T = i, RH = 50 + i."""
    return [f"{START + datetime.timedelta(minutes=step_minutes * i):%d.%m.%Y %H:%M:%S},"
            f"990.0,{i}.0,{50 + i}.0\n" for i in range(start, start + count)]


def load(tmp_path, text):
    path = tmp_path / "x.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("latin-1"))
    return jena.load_series(str(path))


@pytest.mark.parametrize("line, extra", [(2, ",2,5"), (3, ",2,5"), (4, ",2"), (6, ",2,5,6")])
def test_a_row_with_extra_fields_is_an_error_naming_its_line(tmp_path, line, extra):
    body = rows(5)
    body[line - 2] = body[line - 2].rstrip("\n") + extra + "\n"  # line 1 is the header
    with pytest.raises(UserError, match=rf"x.csv' line {line} has {4 + extra.count(',')} "
                                        r"fields, the header 4: fix or remove that row$"):
        load(tmp_path, HEADER + "".join(body))


@pytest.mark.parametrize("column", jena.COLUMNS)
def test_a_repeated_column_is_an_error(tmp_path, column):
    header = HEADER.rstrip("\n") + f",{column}\n"
    body = [r.rstrip("\n") + ",7.0\n" for r in rows(5)]
    with pytest.raises(UserError, match=rf"has 2 columns named '{re.escape(column)}' "
                                        rf"\(columns \d, 5\); keep one$"):
        load(tmp_path, header + "".join(body))


def test_a_utf8_byte_order_mark_before_the_first_column_is_skipped(tmp_path):
    text = "T (degC),rh (%),Date Time\n" + "".join(
        f"{i}.5,{60 + i},{stamp}\n" for i, stamp in
        enumerate(r.split(",")[0] for r in rows(3)))
    values = load(tmp_path, b"\xef\xbb\xbf" + text.encode())
    np.testing.assert_array_equal(values, np.float32([[0.5, 60], [1.5, 61], [2.5, 62]]))


def test_rows_in_time_order_load_without_a_word(tmp_path, capsys):
    values = load(tmp_path, HEADER + "".join(rows(200)))
    assert values.shape == (200, 2) and values[-1].tolist() == [199, 249]
    assert capsys.readouterr().err == ""
    jena.load_series(str(write_jena_csv(tmp_path / "synthetic.csv", 3000)))
    assert capsys.readouterr().err == ""  # the tests' own CSVs are regular too


def test_reversed_rows_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"x.csv' runs backwards in time \(newest row "
                                        r"first\); the windows need the rows in time "
                                        r"order: sort it by Date Time$"):
        load(tmp_path, HEADER + "".join(rows(200)[::-1]))


def test_shuffled_rows_are_refused(tmp_path):
    body = rows(200)
    body[50], body[120] = body[120], body[50]
    with pytest.raises(UserError, match=r"is not in time order \(rows where time goes "
                                        r"back: 2, the first data row 52: .*\); .*: sort "
                                        r"it by Date Time$"):
        load(tmp_path, HEADER + "".join(body))
    random.Random(0).shuffle(body)
    with pytest.raises(UserError, match=r"is not in time order \(.*sort it by Date Time$"):
        load(tmp_path, HEADER + "".join(body))


def test_repeated_times_are_refused_with_their_count(tmp_path):
    body = rows(200)
    body[80:80] = body[79:80]    # one row twice
    body[150:150] = body[149:150] * 2  # another three times
    with pytest.raises(UserError, match=r"has duplicate rows \(rows repeating the previous "
                                        r"row's Date Time: 3, the first data row 81: "
                                        r"01.01.2024 13:10:00\); remove them$"):
        load(tmp_path, HEADER + "".join(body))


def test_gaps_are_one_warning_with_their_count(tmp_path, capsys):
    body = rows(100) + rows(50, start=103) + rows(50, start=300)  # 40 min, then 24.7 h
    values = load(tmp_path, HEADER + "".join(body))
    assert len(values) == 200  # still loaded, positionally
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert re.search(r"x.csv' has gaps \(steps between rows other than the usual 10 "
                     r"minutes: 2, the longest 24.7 hours after 02.01.2024 01:20:00\); "
                     r"windows are taken by position", err), err


def test_no_date_time_column_is_one_warning(tmp_path, capsys):
    values = load(tmp_path, "T (degC),rh (%)\n1.0,50\n2.0,51\n")
    assert values.tolist() == [[1, 50], [2, 51]]
    assert capsys.readouterr().err == ("warning: '" + str(tmp_path / "x.csv") + "' has no "
                                       "'Date Time' column: the rows' time order and "
                                       "spacing cannot be checked\n")


def test_unreadable_date_time_is_an_error(tmp_path):
    body = rows(20)
    body[5] = "2024-01-01 00:50:00" + body[5][19:]
    with pytest.raises(UserError, match=r"'Date Time' '2024-01-01 00:50:00' at data row 6 "
                                        r"is not dd.mm.yyyy HH:MM:SS$"):
        load(tmp_path, HEADER + "".join(body))


def test_a_piped_csv_is_read_once_and_its_checksum_is_of_what_was_read(tmp_path):
    """``--csv <(...)``: the forecaster's own load and describe, on a pipe."""
    import forecast_train
    from common import pipeline
    content = write_jena_csv(tmp_path / "jena.csv", 300).read_bytes()
    read_end, write_end = os.pipe()

    def feed():
        with os.fdopen(write_end, "wb") as f:
            f.write(content)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        task = forecast_train.Forecast(forecast_train.RECIPES)
        args = pipeline.parse_args(task, ["--version", "b", "--csv", f"/dev/fd/{read_end}"])
        recipe = pipeline.resolve_recipe(task.recipes, args)
        data = task.load(args, recipe)
        described = task.describe(data, recipe)["data"]
    finally:
        writer.join(10)
        os.close(read_end)
    assert data.rows == 300
    assert described["sha256"] == hashlib.sha256(content).hexdigest()
