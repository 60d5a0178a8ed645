"""The one generic builder, the public ResNetN / PlainN wrappers and their registry.

Every public builder is `build(spec, ...)` with a row of `specs`; arguments follow
keras.applications (`include_top, weights, input_tensor, input_shape, pooling, classes,
classifier_activation, name`).
"""

from __future__ import annotations

import contextlib
import sys

import keras
from keras import layers

from keras_resnet import specs
from keras_resnet.blocks import STEMS, BlockSettings, stage

POOLINGS = (None, "avg", "max")
DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}
DEFAULT_SIZE = {"imagenet": 224, "cifar": 32}
DEFAULT_SHORTCUT = {"imagenet": "B", "cifar": "A"}


def _validate(spec, residual, shortcut, stride_in, zero_init_residual, pooling, classes, input_shape):
    """Check every argument before any layer is made; messages name value and allowed ones."""
    if residual and shortcut not in specs.SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r} is not one of {specs.SHORTCUTS} (paper section 3.3)")
    if not residual and shortcut is not None:
        raise ValueError(f"shortcut={shortcut!r} given for a plain net, which has no shortcuts; use None")
    if not residual and zero_init_residual:
        raise ValueError("zero_init_residual=True needs a residual net; a plain net would start dead")
    if stride_in not in specs.STRIDE_PLACEMENTS:
        raise ValueError(f"stride_in={stride_in!r} is not one of {specs.STRIDE_PLACEMENTS}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"classes={classes!r} must be an integer >= 1")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape={input_shape!r} must be (height, width, channels)")
    for size in input_shape[:2]:
        if size is not None and size < spec.downsampling:
            raise ValueError(
                f"input_shape={tuple(input_shape)!r} is too small: this net reduces by "
                f"{spec.downsampling}, so height and width must be >= {spec.downsampling} (or None)"
            )


@contextlib.contextmanager
def _deep_graph_recursion(spec):
    """Keras walks a functional graph recursively; ResNet-1202's ~5,000 layers need a
    deeper Python stack than the default 1,000 frames. Restored on exit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20 * sum(spec.blocks_per_stage) + 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _input(input_tensor, input_shape):
    """An Input layer, or the user's tensor wrapped as keras.applications does."""
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="input"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="input"), input_tensor


def _head(x, spec, include_top, pooling, classes, classifier_activation):
    """Global average pool + fc (Table 1), or the optional pooling of a headless net."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def build(
    spec,
    *,
    residual=True,
    shortcut=None,
    stride_in="1x1",
    zero_init_residual=False,
    bn_momentum=0.9,
    bn_epsilon=1.001e-5,
    kernel_initializer="he_normal",
    kernel_regularizer=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    return_features=False,
    name=None,
):
    """Build the network of `spec` (a `specs.NetSpec`).

    `residual=False` gives the plain net of the same stacks (section 4.1). `shortcut`
    defaults to the paper's choice: B for ImageNet nets, A for CIFAR nets.
    `return_features=True` (with include_top=False) returns a backbone whose outputs are
    the dict {"C2": conv2_x, ..., "C5": conv5_x} used by detectors (section 4.3).
    `weights` is None, "imagenet" or a path (see `keras_resnet.weights`).
    """
    if shortcut is None and residual:
        shortcut = DEFAULT_SHORTCUT[spec.stem]
    classes = DEFAULT_CLASSES[spec.stem] if classes is None else classes
    if input_shape is None:
        size = DEFAULT_SIZE[spec.stem] if include_top else None
        input_shape = (size, size, 3)
    _validate(spec, residual, shortcut, stride_in, zero_init_residual, pooling, classes, tuple(input_shape))
    if return_features and include_top:
        raise ValueError("return_features=True builds a backbone without a head: pass include_top=False")
    if weights is not None:
        from keras_resnet import weights as weights_lib

        source = weights_lib.resolve(
            weights,
            spec,
            residual=residual,
            shortcut=shortcut,
            stride_in=stride_in,
            bn_epsilon=bn_epsilon,
            include_top=include_top,
            classes=classes,
        )

    settings = BlockSettings(
        residual=residual,
        shortcut=shortcut,
        stride_in=stride_in,
        zero_init_residual=zero_init_residual,
        bn_momentum=bn_momentum,
        bn_epsilon=bn_epsilon,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=kernel_regularizer,
    )
    inputs, user_tensor = _input(input_tensor, tuple(input_shape))
    x = STEMS[spec.stem](inputs, settings)
    features = {}
    for index in range(len(spec.widths)):
        x = stage(x, spec, index, settings)
        features[f"C{index + 2}"] = x
    outputs = features if return_features else _head(x, spec, include_top, pooling, classes, classifier_activation)
    model_inputs = keras.utils.get_source_inputs(user_tensor) if user_tensor is not None else inputs
    with _deep_graph_recursion(spec):
        model = keras.Model(model_inputs, outputs, name=name or default_name(spec, residual))
    if weights is not None:
        weights_lib.load(model, source)
    return model


def default_name(spec, residual):
    """`resnet50`, `plain34`, `resnet56`: the registry name of a spec."""
    return f"{'resnet' if residual else 'plain'}{spec.depth}"


REGISTRY = {}


def _register(spec, residual, family):
    """Make the public builder for one spec and record it in the registry."""
    shortcut_default = DEFAULT_SHORTCUT[spec.stem]
    kind = "ResNet" if residual else "Plain"
    public_name = f"{kind}{spec.depth}"

    def builder(**kwargs):
        return build(spec, residual=residual, **kwargs)

    builder.__name__ = builder.__qualname__ = public_name
    builder.__doc__ = (
        f"{kind}-{spec.depth} ({family}; {spec.block} blocks {spec.blocks_per_stage}"
        f"{', shortcut ' + shortcut_default + ' by default' if residual else ', no shortcuts'}). "
        "Takes the arguments of `keras_resnet.build`."
    )
    builder.spec = spec
    builder.residual = residual
    REGISTRY[default_name(spec, residual)] = builder
    return builder


def CifarResNet(n, plain=False, **kwargs):
    """Any 6n+2-layer CIFAR-10 net of section 4.2 (n=3 is ResNet-20, n=18 ResNet-110)."""
    return build(specs.cifar_spec(n), residual=not plain, **kwargs)


def list_models():
    """Registered architecture names, as `--model` accepts them."""
    return sorted(
        REGISTRY, key=lambda name: (REGISTRY[name].spec.stem, name.rstrip("0123456789"), REGISTRY[name].spec.depth)
    )


def get_builder(name):
    """The registered builder for `name` (e.g. "resnet56"), or a ValueError listing them."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in REGISTRY:
        raise ValueError(f"model={name!r} is not registered; allowed: {', '.join(list_models())}")
    return REGISTRY[key]


ResNet18 = _register(specs.imagenet_spec(18), True, "ImageNet")
ResNet34 = _register(specs.imagenet_spec(34), True, "ImageNet")
ResNet50 = _register(specs.imagenet_spec(50), True, "ImageNet")
ResNet101 = _register(specs.imagenet_spec(101), True, "ImageNet")
ResNet152 = _register(specs.imagenet_spec(152), True, "ImageNet")
Plain18 = _register(specs.imagenet_spec(18), False, "ImageNet")
Plain34 = _register(specs.imagenet_spec(34), False, "ImageNet")
Plain50 = _register(specs.imagenet_spec(50), False, "ImageNet")
Plain101 = _register(specs.imagenet_spec(101), False, "ImageNet")
Plain152 = _register(specs.imagenet_spec(152), False, "ImageNet")
ResNet20 = _register(specs.cifar_spec(3), True, "CIFAR-10")
ResNet32 = _register(specs.cifar_spec(5), True, "CIFAR-10")
ResNet44 = _register(specs.cifar_spec(7), True, "CIFAR-10")
ResNet56 = _register(specs.cifar_spec(9), True, "CIFAR-10")
ResNet110 = _register(specs.cifar_spec(18), True, "CIFAR-10")
ResNet1202 = _register(specs.cifar_spec(200), True, "CIFAR-10")
Plain20 = _register(specs.cifar_spec(3), False, "CIFAR-10")
Plain32 = _register(specs.cifar_spec(5), False, "CIFAR-10")
Plain44 = _register(specs.cifar_spec(7), False, "CIFAR-10")
Plain56 = _register(specs.cifar_spec(9), False, "CIFAR-10")
Plain110 = _register(specs.cifar_spec(18), False, "CIFAR-10")
