"""The forecaster's model (Keras 2 via tf_keras, as tfmot needs): ``mlp`` with its
frozen persistence skip, and ``fold_persistence``, the same function without the skip."""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tf_keras as keras


def hidden_units(alpha, base=128):
    """The reference width rule: ``int(base * alpha)``, at least one unit."""
    return max(1, int(base * alpha))


def persistence_layer(normalizer, input_steps, output_steps, name="persistence"):
    """A frozen linear layer that repeats the last observed row, in raw units.

    The inputs are normalized; the layer undoes that for the last step, so the
    residual network only learns the change from the last observation. Its weights
    are fixed (not trained, not pruned): 12 non-zeros in a 12x12 matrix.
    """
    n_vars = len(normalizer.mean)
    kernel = np.zeros((input_steps * n_vars, output_steps * n_vars), np.float32)
    last = (input_steps - 1) * n_vars
    for step in range(output_steps):
        for var in range(n_vars):
            kernel[last + var, step * n_vars + var] = normalizer.std[var] + 1e-6
    bias = np.tile(np.array(normalizer.mean, np.float32), output_steps)
    layer = keras.layers.Dense(output_steps * n_vars, name=name, trainable=False)
    return layer, [kernel, bias]


def mlp(alpha, hidden_layers, normalizer, input_steps=6, output_steps=6, n_vars=2,
        batch_size=None):
    """MLP1 (``hidden_layers=1``) or MLP2 (2): Dense(int(128 * alpha)) + ReLU layers and
    a Dense(12) head, added to a frozen persistence skip.

    Input and output are flat ``[batch, 12]`` (the [6, 2] window, row-major): a
    Flatten/Reshape pair would add two ops and their shape tensors to a sub-2 kB file.
    """
    width = hidden_units(alpha)
    inputs = keras.Input((input_steps * n_vars,), batch_size=batch_size, name="window")
    x = inputs
    for i in range(hidden_layers):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{i + 1}")(x)
    residual = keras.layers.Dense(output_steps * n_vars, name="change",
                                  kernel_initializer="zeros")(x)
    skip, skip_weights = persistence_layer(normalizer, input_steps, output_steps)
    outputs = keras.layers.Add(name="forecast")([skip(inputs), residual])
    model = keras.Model(inputs, outputs, name=f"mlp{hidden_layers}")
    skip.set_weights(skip_weights)
    return model


def fold_persistence(model, skip_name="persistence"):
    """An equivalent model without the persistence skip and its Add: two ops and a
    12x12 tensor fewer in the file.

    Uses ``x = relu(x) - relu(-x)``: for each input the skip reads, the first hidden
    layer gets two units, ``relu(x_i)`` and ``relu(-x_i)``; later hidden layers pass
    them through (ReLU of a non-negative value is the value); the head adds them back
    with the skip's weights, and the skip's bias joins the head's. Exact in real
    arithmetic; in float32 it differs by rounding only.
    """
    skip_kernel, skip_bias = model.get_layer(skip_name).get_weights()
    read = np.flatnonzero(np.any(skip_kernel != 0, axis=1))
    dense = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Dense) and layer.name != skip_name]
    *hidden, head = dense
    extra = 2 * len(read)
    inputs = keras.Input(model.input_shape[1:], batch_size=model.input_shape[0],
                         name="window")
    x, weights = inputs, []
    for depth, layer in enumerate(hidden):
        kernel, bias = layer.get_weights()
        n_in, n_out = kernel.shape
        carried = np.zeros((n_in + (extra if depth else 0), n_out + extra), np.float32)
        carried[:n_in, :n_out] = kernel
        if depth == 0:
            carried[read, n_out + 2 * np.arange(len(read))] = 1.0
            carried[read, n_out + 2 * np.arange(len(read)) + 1] = -1.0
        else:
            carried[n_in:, n_out:] = np.eye(extra, dtype=np.float32)
        weights.append([carried, np.concatenate([bias, np.zeros(extra, np.float32)])])
        x = keras.layers.Dense(n_out + extra, activation="relu", name=layer.name)(x)
    kernel, bias = head.get_weights()
    signed = np.stack([skip_kernel[read], -skip_kernel[read]], axis=1).reshape(extra, -1)
    weights.append([np.concatenate([kernel, signed]), bias + skip_bias])
    outputs = keras.layers.Dense(kernel.shape[1], name=head.name)(x)
    folded = keras.Model(inputs, outputs, name=model.name)
    for layer, values in zip([l for l in folded.layers if l.weights], weights):
        layer.set_weights(values)
    return folded
