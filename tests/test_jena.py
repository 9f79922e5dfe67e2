import numpy as np
import pytest

from common import jena
from common.errors import UserError
from conftest import write_jena_csv


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
