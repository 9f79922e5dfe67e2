#!/usr/bin/env python3
"""Train a 6-step temperature/humidity forecaster on Jena climate data and ship it as
a zlib-compressed TFLite file checked against the version's budget.

Every figure printed is measured on the .tflite (MAE, by running it on every test
window) or on the .tflite.zlib file (size).
"""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from common import artifacts, pipeline
from common.forecast import jena
from common.budget import Limit, device_limits
from common.cli import run_main

# How far beyond the training data's range the integer models' calibration reaches,
# in training standard deviations: the test period can be colder or more humid than
# any training window, and a clipped input costs far more than a coarser step.
CALIBRATION_SIGMAS = 5.0
NORMALIZATION = "normalization"  # the metadata entry holding the input statistics


@dataclass(frozen=True)
class ForecastRecipe:
    """Everything that defines a version: model, training, compression and budget."""
    hidden_layers: int          # 1 = MLP1, 2 = MLP2
    alpha: float                # width: int(128 * alpha) units per hidden layer
    sparsity: float             # final magnitude-pruning sparsity (0 = no pruning)
    learning_rate: float
    lr_drop_epochs: tuple       # learning rate / 10 at each of these epochs
    batch_size: int
    epochs: int
    quantization: str           # one of optimize.QUANTIZATION_MODES
    loss_scale: tuple           # per-variable error divisor: (T degC, RH %)
    max_t_mae: float
    max_rh_mae: float
    max_zlib_bytes: int
    prune_epochs: tuple = (5, 15)
    mantissa_bits: int = 23     # float weights rounded to this many mantissa bits
    max_flash_bytes: int = None  # raw .tflite bytes (optional device budget)
    max_arena_bytes: int = None  # TFLM tensor arena bytes (optional device budget)

    def limits(self):
        return (Limit("t_mae", self.max_t_mae), Limit("rh_mae", self.max_rh_mae),
                Limit("zlib_bytes", self.max_zlib_bytes)) + device_limits(self)


RECIPES = {
    # Both beat the reference (MLP1 alpha 0.3 / MLP2 alpha 0.1, see SPEC.md) with an
    # MLP2 that learns the change from a frozen persistence skip, float weights
    # rounded to 8 mantissa bits (zlib then drops their low bytes) and a slimmed
    # flatbuffer; "a" spends its larger budget on less pruning.
    "a": ForecastRecipe(hidden_layers=2, alpha=0.1, sparsity=0.5, learning_rate=0.005,
                        lr_drop_epochs=(50, 60), batch_size=256, epochs=70,
                        quantization="float", mantissa_bits=8, loss_scale=(0.5, 1.8),
                        max_t_mae=0.5, max_rh_mae=1.8, max_zlib_bytes=2000),
    "b": ForecastRecipe(hidden_layers=2, alpha=0.1, sparsity=0.7, learning_rate=0.005,
                        lr_drop_epochs=(50, 60), batch_size=256, epochs=70,
                        quantization="float", mantissa_bits=8, loss_scale=(0.5, 1.8),
                        max_t_mae=0.6, max_rh_mae=1.9, max_zlib_bytes=1700),
}

EXAMPLES = """\
  python forecast_train.py --version a
  python forecast_train.py --version b --csv ~/jena_climate_2009_2016.csv --seed 1
  python forecast_train.py --version a --evaluate models/forecast_a.tflite.zlib
  python forecast_train.py --version a --search 40 --export-best
"""


def budget_fraction(metrics, recipe):
    """The search's error objective: the larger of T MAE / T budget and RH MAE / RH
    budget, so < 1 exactly when both error limits hold."""
    return max(metrics["t_mae"] / recipe.max_t_mae, metrics["rh_mae"] / recipe.max_rh_mae)


def flat(windows):
    """``([n, 6, 2], [n, 6, 2])`` -> ``([n, 12], [n, 12])``: the model's flat layout."""
    x, y = windows
    return x.reshape(len(x), -1), y.reshape(len(y), -1)


def calibration_samples(train_x, count=500):
    """Evenly spaced training windows plus constant windows at +/- CALIBRATION_SIGMAS
    (every sign combination of the two variables). Training data only."""
    picks = train_x[np.linspace(0, len(train_x) - 1, min(count, len(train_x))).astype(int)]
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
    extremes = np.tile(signs * CALIBRATION_SIGMAS, (1, jena.INPUT_STEPS))
    return np.concatenate([picks, extremes]).astype(np.float32)


def weighted_mae(loss_scale):
    """Mean absolute error with each variable divided by its scale (its budget), so
    degC and % errors count by their share of the budget."""
    tf = common.import_tensorflow()
    weights = tf.constant(np.tile(1.0 / np.array(loss_scale, np.float32),
                                  jena.LABEL_STEPS))

    def loss(y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_true - y_pred) * weights)
    return loss


def search_knobs(trial, base):
    return {"hidden_layers": trial.suggest_int("hidden_layers", 1, 2),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 2e-2, log=True),
            "mantissa_bits": trial.suggest_int("mantissa_bits", 5, 12)}


SEARCHED = ("hidden_layers", "alpha", "sparsity", "learning_rate", "mantissa_bits", "epochs")

SEARCH_SPACE = pipeline.SearchSpace(
    knobs=search_knobs,
    ranges={"alpha": (0.05, 0.4), "sparsity": (0.0, 0.9), "epochs": (20, None)},
    epoch_fields=("lr_drop_epochs",),
    params=lambda r: {k: v for k, v in dataclasses.asdict(r).items() if k in SEARCHED},
    error=budget_fraction, error_label="max(T MAE/budget, RH MAE/budget), validation",
    error_limit=lambda recipe: 1.0,
    # the published results (SPEC.md, full 2009-2016 file), drawn on the plots
    reference={"a": (1900, {"t_mae": 0.47, "rh_mae": 1.76}),
               "b": (1680, {"t_mae": 0.52, "rh_mae": 1.85})})


class Forecast(pipeline.Task):
    name = "forecast"
    description = __doc__.split("\n\n")[0]
    recipes = RECIPES
    examples = EXAMPLES
    header = ["model", "T MAE degC", "RH MAE %", ".tflite B", ".tflite.zlib B"]
    search_space = SEARCH_SPACE

    def add_arguments(self, parser):
        parser.add_argument("--csv", help="a local CSV with 'T (degC)' and 'rh (%%)' "
                                          "columns in 10-minute rows (default: DATA_DIR/"
                                          f"{jena.FILENAME}, downloaded when missing)")

    def load(self, args, recipe, evaluating=None):
        if args.csv:
            args.csv_path = args.csv
        else:
            from common.download import download_and_extract
            args.csv_path = download_and_extract(
                jena.URL, args.data_dir, os.path.join(args.data_dir, jena.FILENAME),
                not args.no_download, hint="pass --csv PATH with a local copy",
                quiet=args.quiet)
        normalizer = None
        if evaluating is not None:  # the model's own statistics, not this CSV's
            from common.tflite import tflite_file
            normalizer = jena.Normalizer(**json.loads(tflite_file.read_required(
                evaluating.tflite_bytes, evaluating.path, NORMALIZATION)))
        content = jena.read_bytes(args.csv_path)  # once: --csv may be a pipe
        args.csv_sha256 = hashlib.sha256(content).hexdigest()
        data = jena.prepare(jena.load_series(args.csv_path, content), normalizer)
        print(f"forecast {args.version}: {data.rows} rows from {args.csv_path}; "
              f"{len(data.train[0])} training windows", flush=True)
        return data

    def finish_model(self, tflite_bytes, data, recipe):
        """Record the input normalization in the file: the model is only right with
        the statistics it was trained with. Written as the shortest decimals that
        give back the same float32 values (the normalization computes in float32):
        about 100 bytes of the compressed file, most of it the metadata entry."""
        from common.tflite import tflite_file
        shortest = {name: [float(np.format_float_positional(np.float32(v))) for v in values]
                    for name, values in dataclasses.asdict(data.normalizer).items()}
        return tflite_file.with_metadata(tflite_bytes, NORMALIZATION,
                                         json.dumps(shortest, separators=(",", ":")))

    def train(self, recipe, data, seed, verbose):
        """Train, prune, round and convert (the skip folded into the MLP: two ops
        fewer); the model returned is the trained Keras model before folding."""
        from common.forecast import model as forecast_model
        from common.tflite import optimize, training
        import tf_keras as keras
        training.set_seed(seed)
        model, fit_info = training.fit(
            forecast_model.mlp(recipe.alpha, recipe.hidden_layers, data.normalizer),
            flat(data.train), flat(data.val), epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr_schedule=training.step_schedule(recipe.learning_rate, recipe.lr_drop_epochs),
            loss=weighted_mae(recipe.loss_scale),
            optimizer=keras.optimizers.Adam(recipe.learning_rate),
            sparsity=recipe.sparsity, prune_epochs=recipe.prune_epochs,
            verbose=2 if verbose else 0)
        optimize.round_mantissa(model, recipe.mantissa_bits)
        tflite_bytes = optimize.convert(forecast_model.fold_persistence(model),
                                        recipe.quantization,
                                        calibration_samples(flat(data.train)[0]))
        return model, tflite_bytes, fit_info

    def inputs(self, data, recipe, split):
        return flat(getattr(data, split))

    def output_names(self, data):
        return [f"step {step + 1} {column}" for step in range(jena.LABEL_STEPS)
                for column in jena.COLUMNS]

    def score(self, outputs, y, data):
        """T and RH MAE over every window and step."""
        t_mae, rh_mae = jena.mae_per_variable(outputs, y)
        return {"t_mae": round(float(t_mae), 4), "rh_mae": round(float(rh_mae), 4)}, {}

    def baselines(self, recipe, data, args):
        """The same model float and unpruned, for scale."""
        print("training the float reference (no pruning, no quantization) ...", flush=True)
        float_recipe = dataclasses.replace(recipe, sparsity=0.0, mantissa_bits=23,
                                           quantization="float")
        _, tflite_bytes, _ = self.train(float_recipe, data, args.seed, not args.quiet)
        metrics, _ = pipeline.measure(self, tflite_bytes, data, float_recipe, "test", args)
        metrics.update(artifacts.sizes(tflite_bytes, artifacts.compress(tflite_bytes)))
        return [("float_unpruned", "float, unpruned", metrics)]

    def describe(self, args, data, recipe):
        return {
            "data": {"file": os.path.basename(args.csv_path), "rows": data.rows,
                     "sha256": args.csv_sha256,
                     "windows": {s: len(getattr(data, s)[0])
                                 for s in ("train", "val", "test")}},
            "normalization": dataclasses.asdict(data.normalizer),
            "model_io": f"input: {recipe.quantization} [1, 12] = the 6x2 window (rows: "
                        "steps, columns: T, RH) normalized with 'normalization', "
                        "flattened row-major (integer models: quantize with the input "
                        "tensor's scale and zero point); output: [1, 12] = 6 steps x "
                        "(T degC, RH %), row-major"}

    def row(self, name, m):
        return [name, f"{m['t_mae']:.3f}", f"{m['rh_mae']:.3f}", m["tflite_bytes"],
                m["zlib_bytes"]]


def main(argv=None):
    return pipeline.main(Forecast(), argv)


if __name__ == "__main__":
    run_main(main)
