"""--seeds: every seed trained and measured on the .tflite, mean and spread reported,
and the shipped seed chosen on validation, never on test."""
import json
from dataclasses import dataclass

import numpy as np
import pytest

from common import pipeline
from common.budget import Limit
from test_cli import run_in_process


@dataclass(frozen=True)
class ConstantRecipe:
    quantization: str = "float"
    sparsity: float = 0.0
    max_flash_bytes: int = None
    max_arena_bytes: int = None

    def limits(self):
        return (Limit("mae", 1.5),)


class ConstantTask(pipeline.Task):
    """Seed s ships a model that always answers s: validation wants 1, test wants 2,
    so the best seed on test (2) is not the best on validation (1)."""
    name = "const"
    description = "constant models"
    recipes = {"x": ConstantRecipe()}
    columns = (pipeline.Column("mae", "mae"), pipeline.Column(".tflite B", "tflite_bytes"),
               pipeline.Column(".tflite.zlib B", "zlib_bytes"))
    search_space = pipeline.SearchSpace(
        knobs=None, ranges={}, epoch_fields=(), params=None,
        error=lambda metrics, recipe: metrics["mae"], error_label="mae",
        error_limit=lambda recipe: 1.5, reference={})
    targets = {"val": 1.0, "test": 2.0}

    def load(self, args, recipe, evaluating=None):
        return None

    def train(self, recipe, data, seed, verbose):
        import tf_keras as keras
        from common.tflite import optimize
        inputs = keras.Input((2,))
        outputs = keras.layers.Dense(1, kernel_initializer="zeros",
                                     bias_initializer=keras.initializers.Constant(seed))(inputs)
        model = keras.Model(inputs, outputs)
        return model, optimize.convert(model, "float"), {}

    def inputs(self, data, recipe, split):
        return np.zeros((4, 2), np.float32), np.full((4, 1), self.targets[split])

    def score(self, outputs, y, data):
        return {"mae": round(float(np.abs(outputs - y).mean()), 4)}, {}


def test_seeds_report_mean_and_spread_and_ship_the_best_validation_seed(tmp_path,
                                                                        capsys):
    code, out, _ = run_in_process(lambda argv: pipeline.main(ConstantTask(), argv), [
        "--version", "x", "--seeds", "0,1,2", "--out-dir", str(tmp_path), "--no-micro",
        "--quiet"], capsys)
    report = json.loads((tmp_path / "const_x.json").read_text())
    assert report["seed"] == 1                      # validation picks, not test (2)
    assert report["metrics"]["mae"] == 1.0          # the shipped seed's test figure
    assert [s["metrics"]["mae"] for s in report["seeds"]] == [2.0, 1.0, 0.0]
    assert [s["validation_error"] for s in report["seeds"]] == [1.0, 0.0, 1.0]
    assert report["seed_summary"]["mae"] == {"mean": 1.0,
                                             "std": pytest.approx(0.8165, abs=1e-4)}
    assert [s["budget_holds"] for s in report["seeds"]] == [False, True, True]
    assert code == 0 and "seed 1, shipped" in out and "mae 1 ± 0.8165" in out


@pytest.mark.parametrize("text", ["1,x", "1,1", "-1"])
def test_bad_seed_lists_are_one_line_errors(tmp_path, capsys, text):
    code, _, err = run_in_process(lambda argv: pipeline.main(ConstantTask(), argv), [
        "--version", "x", f"--seeds={text}", "--out-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "--seeds" in err
