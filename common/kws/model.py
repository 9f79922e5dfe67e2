"""The keyword spotter's model (Keras 2 via tf_keras, as tfmot needs): ``ds_cnn``."""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import tf_keras as keras


def filters(alpha):
    """The reference width rule: ``int(256 * alpha)`` filters, at least one."""
    return max(1, int(256 * alpha))


def ds_cnn(alpha, input_shape, first_strides, n_classes=8, batch_size=None, blocks=2):
    """The reference DS-CNN: Conv2D(256a, 3x3, ``first_strides``), BN, ReLU; ``blocks``
    depthwise-separable blocks (the reference has two); global average pooling; Dense
    logits."""
    width = filters(alpha)
    inputs = keras.Input(input_shape, batch_size=batch_size, name="features")
    x = keras.layers.Conv2D(width, 3, strides=first_strides, padding="same",
                            use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    for i in range(1, blocks + 1):
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = keras.layers.Conv2D(width, 1, use_bias=False, name=f"pw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = keras.layers.ReLU(name=f"pw{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")
