#!/usr/bin/env python3
"""Train a DS-CNN keyword spotter on Mini Speech Commands and ship it as a
zlib-compressed, full-integer TFLite file checked against the version's budget.

Accuracy is measured by running the .tflite on all test clips, size on the
.tflite.zlib file, latency with the course's definition (a 1 s 48 kHz signal,
resampled and turned into features, then set input, invoke, read output).
Why each choice below, with its measurements: docs/keyword_spotting.md.
"""
import dataclasses

import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from common import cli, pipeline
from common.kws import audio, speech, synth
from common.kws.negatives import Negatives
from common.kws.recipe import KwsRecipe
from common.kws.specaugment import SpecAugment
from common.kws.speech import Perturbation
from common.kws.task import KeywordSpotting

MFCC = audio.FeatureConfig()
# Less each MFCC's mean over the frames within 30 dB of the loudest: a gain or a fixed
# microphone response is a constant per coefficient (docs/robustness.md#the-mean-removal-step).
MFCC_GATED_MEAN = dataclasses.replace(MFCC, remove_mean=True,
                                      mean_gate_db=audio.WORD_GATE_DB)
# Log magnitude (one int8 scale over a linear |STFT| zeroes most of the image), cut at
# 4 kHz (white noise buries what lies above), area-resized to 40x40 (averages every
# frame; bilinear skips a third): docs/keyword_spotting.md#c-its-input.
STFT_40 = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                              fft_length=256, resize=40, log_magnitude=True, max_hz=4000.0,
                              resize_method="area")

STRIDE_2X2 = (2, 2)  # halves the largest activations: the tensor arena (TFLM's RAM)
# Masking buys clean accuracy for free; distillation gave the same, not more, for the
# price of a teacher (docs/keyword_spotting.md#masking-distillation-and-copies).
MASK_MFCC = SpecAugment(time_masks=2, max_time_width=5, freq_masks=1, max_freq_width=2)
MASK_STFT = SpecAugment(time_masks=2, max_time_width=5, freq_masks=2, max_freq_width=4)
# The talker, the room and the microphone, drawn per augmented copy, with a +-250 ms
# shift; each lifts its own conditions on validation but the tilt, which helps in noise
# (docs/robustness.md#which-ingredients-pay).
ROBUST_INGREDIENTS = {
    "speed": (Perturbation("speed", 0.4, 0.85, 1.15),),
    "warp": (Perturbation("warp", 0.4, 0.9, 1.1),),
    "reverb": (Perturbation("reverb", 0.4, 0.2, 0.8),),
    "band": (Perturbation("lowpass", 0.25, 2500.0, 7000.0),
             Perturbation("highpass", 0.25, 100.0, 400.0)),
    "tilt": (Perturbation("tilt", 0.4, -6.0, 6.0),),
    "level": (Perturbation("level", 0.3, -20.0, 20.0),),
}


def ingredients(*names):
    """The perturbations of the named ``ROBUST_INGREDIENTS``, in the table's order (the
    order the augmentation draws them in, so a recipe's copies are reproducible)."""
    unknown = set(names) - set(ROBUST_INGREDIENTS)
    if unknown:  # a misspelt name would silently drop its perturbations
        raise KeyError(f"unknown ingredients: {sorted(unknown)}")
    return tuple(p for name, kind in ROBUST_INGREDIENTS.items() if name in names
                 for p in kind)


ROBUST = speech.Augmentation(copies=3, max_shift_s=0.25,
                             perturbations=ingredients(*ROBUST_INGREDIENTS))
# b: the microphone alone; with the talker and the room, or the level, its clean
# accuracy fell under its target (docs/robustness.md#what-each-version-trains-on).
CHANNEL = dataclasses.replace(ROBUST, perturbations=ingredients("band", "tilt"))
# a: the microphone and the level.
CHANNEL_LEVEL = dataclasses.replace(ROBUST, perturbations=ingredients("band", "tilt",
                                                                      "level"))
# c: all but the level (with it c fell under its clean target), four copies.
ROBUST_4 = dataclasses.replace(ROBUST, copies=4, perturbations=ingredients(
    *(name for name in ROBUST_INGREDIENTS if name != "level")))

# e's "no keyword": other speech synthesized in voices validation and test never use,
# windows cut from made streams, one round of mining (docs/listening.md#what-e-trains-on).
LISTENING = Negatives(synth_unknown_fraction=0.3, synth_keyword_fraction=0.1,
                      stream_fraction=0.2, mining_rounds=1,
                      synth_plan=synth.Plan(words=6000, phrases=3000,
                                            keywords_per_label=150))

# All: a 2x2 first stride, noise-robust copies, masking. a wider and half pruned;
# b dense; c log-STFT 40x40 (56x56 needs a 124 kB arena), four copies; d and e the
# micro_speech envelope (20 KB of arena, 32 KB of flash); e adds background and
# unknown-speech outputs for listening (docs/keyword_spotting.md#model-cards).
RECIPES = {
    "a": KwsRecipe(features=MFCC_GATED_MEAN, alpha=0.3, sparsity=0.5,
                   first_stride=STRIDE_2X2, spec_augment=MASK_MFCC,
                   augmentation=CHANNEL_LEVEL, max_zlib_bytes=25000),
    "b": KwsRecipe(features=MFCC, alpha=0.25, sparsity=0.0, first_stride=STRIDE_2X2,
                   spec_augment=MASK_MFCC, augmentation=CHANNEL, max_zlib_bytes=35000,
                   max_inference_ms=1.5),
    "c": KwsRecipe(features=STFT_40, alpha=0.25, sparsity=0.0, first_stride=STRIDE_2X2,
                   spec_augment=MASK_STFT, augmentation=ROBUST_4, max_zlib_bytes=45000,
                   max_total_ms=40.0),
    "d": KwsRecipe(features=MFCC_GATED_MEAN, alpha=0.235, sparsity=0.0,
                   first_stride=STRIDE_2X2, spec_augment=MASK_MFCC, augmentation=ROBUST,
                   max_zlib_bytes=32768, max_flash_bytes=32768, max_arena_bytes=20480),
    "e": KwsRecipe(features=MFCC, alpha=0.235, sparsity=0.0, first_stride=STRIDE_2X2,
                   spec_augment=MASK_MFCC, max_zlib_bytes=32768, max_flash_bytes=32768,
                   max_arena_bytes=20480, negatives=LISTENING,
                   augmentation=speech.Augmentation(copies=3, max_shift_s=0.25)),
}

EXAMPLES = """\
  python kws_train.py --version c
  python kws_train.py --version a --data-dir /datasets --seed 1
  python kws_train.py --version c --evaluate models/kws_c.tflite.zlib
  python kws_train.py --version c --search 30 --export-best
"""


def main(argv=None):
    return pipeline.main(KeywordSpotting(RECIPES, __doc__, EXAMPLES), argv)


if __name__ == "__main__":
    cli.run_main(main)
