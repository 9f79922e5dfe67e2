"""What defines a keyword-spotting version: ``KwsRecipe``, a frozen dataclass with its
budget inside (the versions themselves are the table in ``kws_train.py``)."""
from dataclasses import dataclass

from common.budget import Limit, device_limits
from common.kws import audio, speech
from common.kws.distill import Distillation
from common.kws.negatives import Negatives
from common.kws.specaugment import SpecAugment


@dataclass(frozen=True)
class KwsRecipe:
    """Everything that defines a version: features, model, training, budget."""
    features: audio.FeatureConfig
    alpha: float                     # int(256 * alpha) filters
    sparsity: float                  # final magnitude-pruning sparsity (0 = no pruning)
    max_zlib_bytes: int
    min_accuracy: float = 0.90
    max_inference_ms: float = None   # mean, 1 thread
    max_total_ms: float = None       # mean, 1 thread
    learning_rate: float = 0.02
    lr_drop_epochs: tuple = (20, 25)
    epochs: int = 30
    batch_size: int = 64
    prune_epochs: tuple = (5, 25)
    augmentation: speech.Augmentation = speech.Augmentation(copies=3)
    quantization: str = "int8"
    first_stride: tuple = None       # None: (2, 1) MFCC, (2, 2) STFT (docs/spec.md)
    prune_depthwise: bool = True     # with sparsity: depthwise kernels are pruned too
    max_flash_bytes: int = None      # raw .tflite bytes (optional device budget)
    max_arena_bytes: int = None      # TFLM tensor arena bytes (optional device budget)
    spec_augment: SpecAugment = None  # feature masking, drawn per batch (None: off)
    distillation: Distillation = None  # soft targets from a wider teacher (None: off)
    negatives: Negatives = None  # a listening version: background and
    #                                        unknown-speech outputs, trained on made
    #                                        negatives (None: the 8 keywords only)
    blocks: int = 2                  # depthwise-separable blocks after the first conv

    def first_strides(self):
        if self.first_stride is not None:
            return tuple(self.first_stride)
        return (2, 1) if self.features.kind == "mfcc" else (2, 2)

    def limits(self):
        limits = [Limit("accuracy", self.min_accuracy, below=False),
                  Limit("zlib_bytes", self.max_zlib_bytes)]
        if self.max_inference_ms is not None:
            limits.append(Limit("inference_ms", self.max_inference_ms))
        if self.max_total_ms is not None:
            limits.append(Limit("total_ms", self.max_total_ms))
        return tuple(limits) + device_limits(self)
