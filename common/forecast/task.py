"""The forecaster as the pipeline runs it: ``Forecast``, its flag, data, training
(an MLP with a frozen persistence skip, pruned, mantissa-rounded, folded and
converted), the normalization it records in the ``.tflite``, scoring, the JSON fields
and the summary row."""
import dataclasses
import hashlib
import json
import os

import numpy as np

import common
from common import pipeline
from common.forecast import jena
from common.forecast.search_space import SEARCH_SPACE
from common.pipeline import Baseline, Column

# How far beyond the training data's range the integer models' calibration reaches,
# in training standard deviations: the test period can be colder or more humid than
# any training window, and a clipped input costs far more than a coarser step.
CALIBRATION_SIGMAS = 5.0
NORMALIZATION = "normalization"  # the metadata entry holding the input statistics


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


def float_unpruned(recipe):
    """The same model float and unpruned, for scale (the baseline)."""
    return dataclasses.replace(recipe, sparsity=0.0, mantissa_bits=23, quantization="float")


def float32_text(value):
    """The shortest decimal that reads back as ``value``'s float32."""
    return np.format_float_positional(np.float32(value))


class Forecast(pipeline.Task):
    name = "forecast"
    columns = (Column("T MAE degC", "t_mae", ".3f"), Column("RH MAE %", "rh_mae", ".3f"),
               Column(".tflite B", "tflite_bytes"), Column(".tflite.zlib B", "zlib_bytes"))
    baselines = (Baseline("float_unpruned", "float, unpruned", float_unpruned,
                          "training the float reference (no pruning, no quantization) ..."),)
    search_space = SEARCH_SPACE

    def add_arguments(self, parser):
        parser.add_argument("--csv", help="a local CSV with 'T (degC)' and 'rh (%%)' "
                                          "columns in 10-minute rows (default: DATA_DIR/"
                                          f"{jena.FILENAME}, downloaded when missing)")

    def load(self, args, recipe, evaluating=None):
        csv_path = args.csv
        if not csv_path:
            from common.download import download_and_extract
            csv_path = download_and_extract(
                jena.URL, args.data_dir, os.path.join(args.data_dir, jena.FILENAME),
                not args.no_download, hint="pass --csv PATH with a local copy",
                quiet=args.quiet)
        normalizer = None
        if evaluating is not None:  # the model's own statistics, not this CSV's
            from common.tflite import tflite_file
            normalizer = jena.Normalizer(**json.loads(tflite_file.read_required(
                evaluating.tflite_bytes, evaluating.path, NORMALIZATION)))
        content = jena.read_bytes(csv_path)  # once: --csv may be a pipe
        data = jena.prepare(jena.load_series(csv_path, content), normalizer)
        data.file, data.sha256 = (os.path.basename(csv_path),
                                  hashlib.sha256(content).hexdigest())
        print(f"forecast {args.version}: {data.rows} rows from {csv_path}; "
              f"{len(data.train[0])} training windows", flush=True)
        return data

    def finish_model(self, tflite_bytes, data, recipe):
        """Record the input normalization in the file: the model is only right with
        the statistics it was trained with. Written as the shortest decimals that
        give back the same float32 values (the normalization computes in float32):
        about 100 bytes of the compressed file, most of it the metadata entry."""
        from common.tflite import tflite_file
        shortest = {name: [float(float32_text(v)) for v in values]
                    for name, values in dataclasses.asdict(data.normalizer).items()}
        return tflite_file.with_metadata(tflite_bytes, NORMALIZATION,
                                         json.dumps(shortest, separators=(",", ":")))

    def train(self, recipe, data, seed, verbose):
        """Train, prune, round and convert (the skip folded into the MLP: two ops
        fewer); the model returned is the trained Keras model before folding."""
        from common.forecast import model as forecast_model
        from common.tflite import optimize, training
        training.set_seed(seed)
        model, fit_info = training.fit(
            forecast_model.mlp(recipe.alpha, recipe.hidden_layers, data.normalizer),
            flat(data.train), flat(data.val), recipe, loss=weighted_mae(recipe.loss_scale),
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

    def input_notes(self, data, recipe):
        norm = data.normalizer
        return [f"the last {jena.INPUT_STEPS} rows of ({', '.join(jena.COLUMNS)}), "
                "oldest first, row-major, as far apart as the training CSV's rows (the "
                "Jena data's: 10 minutes)",
                *(f"{column}: (x - {float32_text(mean)}) / ({float32_text(std)} + "
                  f"{jena.NORM_EPSILON:g})"
                  for column, mean, std in zip(jena.COLUMNS, norm.mean, norm.std)),
                "outputs: in the columns' own units (not normalized)"]

    def score(self, outputs, y, data):
        """T and RH MAE over every window and step."""
        t_mae, rh_mae = jena.mae_per_variable(outputs, y)
        return {"t_mae": round(float(t_mae), 4), "rh_mae": round(float(rh_mae), 4)}, {}

    def describe(self, data, recipe):
        return {
            "data": {"file": data.file, "rows": data.rows, "sha256": data.sha256,
                     "windows": {s: len(getattr(data, s)[0])
                                 for s in ("train", "val", "test")}},
            "normalization": dataclasses.asdict(data.normalizer),
            "model_io": f"input: {recipe.quantization} [1, 12] = the 6x2 window (rows: "
                        "steps, columns: T, RH) normalized with 'normalization', "
                        "flattened row-major (integer models: quantize with the input "
                        "tensor's scale and zero point); output: [1, 12] = 6 steps x "
                        "(T degC, RH %), row-major"}
