"""What defines a forecasting version: ``ForecastRecipe``, a frozen dataclass with its
budget inside (the versions themselves are the table in ``forecast_train.py``)."""
from dataclasses import dataclass

from common.budget import Limit, device_limits


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
