"""The results JSON is built in one place: a key that two parts write is an error."""
import pytest

from common import pipeline, results
from test_seeds import ConstantTask


def test_parts_are_merged_in_order():
    merged = results.record(("a", {"x": 1, "y": 2}), ("b", {}), ("c", {"z": 3}))
    assert list(merged.items()) == [("x", 1), ("y", 2), ("z", 3)]


def test_a_key_written_by_two_parts_raises_naming_both():
    with pytest.raises(results.KeyCollision, match="'metrics' is written by both "
                                                   "describe and the verdicts"):
        results.record(("describe", {"data": 1, "metrics": 2}),
                       ("the verdicts", {"metrics": 3}))


class CollidingTask(ConstantTask):
    def describe(self, data, recipe):
        return {"budget_holds": "a task field that would hide the verdict"}


def test_a_task_field_colliding_with_the_pipelines_fails_the_run(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(results.KeyCollision, match="'budget_holds'"):
        pipeline.main(CollidingTask(), ["--version", "x", "--out-dir", str(out),
                                        "--no-micro", "--quiet"])
    assert not out.exists() or not list(out.iterdir())  # nothing published


class ProbeCollidingTask(ConstantTask):
    """A probe that writes the score's own key: it would replace the figure the
    budget judges."""
    probes = (pipeline.Probe("overwriting probe",
                             lambda runner, data, recipe, split, settings: (
                                 {"mae": 0.0}, {}), splits=("test",)),)


def test_a_probe_writing_a_measured_key_fails_the_run(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(results.KeyCollision, match="'mae' is written by both the "
                                                   "measured metrics and overwriting probe"):
        pipeline.main(ProbeCollidingTask(), ["--version", "x", "--out-dir", str(out),
                                             "--no-micro", "--quiet"])
    assert not out.exists() or not list(out.iterdir())
