"""The feature configuration a keyword spotter records in its ``.tflite`` (the
``features`` metadata): written when a model is shipped, read by ``--evaluate`` and
the detector, and compared with the version's own."""
import dataclasses
import json

from common.errors import UserError
from common.kws import audio
from common.tflite import tflite_file

METADATA = "features"  # the metadata entry: audio.FeatureConfig as compact JSON


def features_text(config):
    """The feature configuration as compact JSON (the model's ``features`` metadata)."""
    return json.dumps(dataclasses.asdict(config), separators=(",", ":"))


def read_features(tflite_bytes, path):
    """The feature configuration a keyword spotter records; a model without one or
    with a damaged one is a UserError. A field the record lacks (added to
    FeatureConfig since) takes its default."""
    text = tflite_file.read_required(tflite_bytes, path, METADATA)
    try:
        return audio.FeatureConfig(**json.loads(text))
    except (ValueError, TypeError):  # not JSON, not an object, unknown or bad fields
        raise UserError(f"{path!r} has damaged 'features' metadata (not a feature "
                        "configuration); retrain it") from None


def check_features(model_file, config, version):
    """A model is only right on the features it was trained on: two configurations
    can give the same input shape (a 40x40 log-STFT with and without a frequency
    cut), so --evaluate compares the recorded configuration, not only the shape. A
    field the record lacks (added to FeatureConfig since) takes its default."""
    recorded = read_features(model_file.tflite_bytes, model_file.path)
    differ = [f.name for f in dataclasses.fields(config)
              if getattr(recorded, f.name) != getattr(config, f.name)]
    if differ:
        shown = ", ".join(f"{name} {getattr(recorded, name)} (version {version}: "
                          f"{getattr(config, name)})" for name in differ)
        raise UserError(f"{model_file.path!r} was trained on other features than "
                        f"version {version} computes: {shown}; evaluate it with the "
                        "version that made it")
