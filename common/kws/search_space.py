"""The keyword spotter's search space for ``--search`` (and its error objective, which
also chooses among ``--seeds`` on validation)."""
import dataclasses

from common.kws import audio
from common.pipeline import SearchSpace


# the front end's per-utterance mean removal: name -> (remove_mean, mean_gate_db)
MEAN_REMOVAL = {"none": (False, 0.0), "every frame": (True, 0.0),
                f"within {audio.WORD_GATE_DB:g} dB": (True, audio.WORD_GATE_DB)}


def search_knobs(trial, base):
    """Features (MFCC or a square-resized STFT, whole or cut at 4 kHz, bilinear or
    area resize; 8 or 16 kHz; with or without mean removal) and learning rate."""
    rate = trial.suggest_categorical("sample_rate", [8000, 16000])
    kind = trial.suggest_categorical("features", ["mfcc", "stft"])
    if kind == "mfcc":
        frame = rate * trial.suggest_categorical("frame_ms", [20, 30, 40]) // 1000
        config = audio.FeatureConfig(
            sample_rate=rate, frame_length=frame, frame_step=frame // 2, fft_length=frame,
            num_mfccs=trial.suggest_int("num_mfccs", 8, 16), upper_hz=min(4000.0, rate / 2))
    else:
        frame = 256 * rate // 16000
        config = audio.FeatureConfig(
            kind="stft", sample_rate=rate, frame_length=frame, frame_step=frame // 2,
            fft_length=frame, log_magnitude=True,
            resize=trial.suggest_categorical("resize", [24, 32, 40, 56]),
            max_hz=trial.suggest_categorical("max_hz", [0.0, 4000.0]),
            resize_method=trial.suggest_categorical("resize_method", ["bilinear", "area"]))
    remove_mean, gate_db = MEAN_REMOVAL[trial.suggest_categorical("mean_removal",
                                                                   list(MEAN_REMOVAL))]
    config = dataclasses.replace(config, remove_mean=remove_mean, mean_gate_db=gate_db)
    return {"features": config,
            "learning_rate": trial.suggest_float("learning_rate", 0.003, 0.03, log=True)}


def search_params(recipe):
    """``recipe`` in the search space's terms (what ``search_knobs`` rebuilds it from)."""
    f = recipe.features
    params = {"sample_rate": f.sample_rate, "features": f.kind,
              "learning_rate": recipe.learning_rate, "alpha": recipe.alpha,
              "sparsity": recipe.sparsity, "epochs": recipe.epochs,
              "mean_removal": next(name for name, value in MEAN_REMOVAL.items()
                                   if value == (f.remove_mean, f.mean_gate_db))}
    if f.kind == "mfcc":
        params.update(frame_ms=1000 * f.frame_length // f.sample_rate, num_mfccs=f.num_mfccs)
    else:
        params.update(resize=f.resize, max_hz=f.max_hz, resize_method=f.resize_method)
    return params


SEARCH_SPACE = SearchSpace(
    knobs=search_knobs,
    ranges={"alpha": (0.1, 0.75), "sparsity": (0.0, 0.9), "epochs": (10, None)},
    epoch_fields=("lr_drop_epochs", "prune_epochs"), params=search_params,
    error=lambda metrics, recipe: 1.0 - metrics["accuracy"],
    error_label="1 - accuracy (validation)",
    error_limit=lambda recipe: 1.0 - recipe.min_accuracy,
    reference={"a": (23100, {"accuracy": 0.93}), "b": (26400, {"accuracy": 0.93}),
               "c": (26400, {"accuracy": 0.91})})
