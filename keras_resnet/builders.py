"""The one generic builder, the public ResNetN / PlainN wrappers and their registry.

Every public builder is `build(spec, ...)` with a row of `specs`; arguments follow
keras.applications (`include_top, weights, input_tensor, input_shape, pooling, classes,
classifier_activation, name`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys

import keras
from keras import layers

from keras_resnet import specs
from keras_resnet import weights as weights_lib
from keras_resnet.blocks import STEMS, BlockSettings, stage
from keras_resnet.record import Architecture, Record

POOLINGS = (None, "avg", "max")
DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}
DEFAULT_SIZE = {"imagenet": 224, "cifar": 32}
DEFAULT_SHORTCUT = {"imagenet": "B", "cifar": "A"}
DEFAULT_BN_EPSILON = 1.001e-5
DEFAULT_BN_MOMENTUM = 0.9
# The builder arguments an Architecture records (beside the spec and residual).
ARCHITECTURE_ARGS = (
    "shortcut",
    "stride_in",
    "bn_epsilon",
    "bn_momentum",
    "classes",
    "input_shape",
    "include_top",
    "pooling",
    "classifier_activation",
)


def _validate(spec, residual, shortcut, stride_in, zero_init_residual, pooling, classes, input_shape, bn):
    """Check every argument before any layer is made; messages name value and allowed ones."""
    if residual and shortcut not in specs.SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r} is not one of {specs.SHORTCUTS} (paper section 3.3)")
    if not residual and shortcut is not None:
        raise ValueError(f"shortcut={shortcut!r} given for a plain net, which has no shortcuts; use None")
    if not residual and zero_init_residual:
        raise ValueError("zero_init_residual=True needs a residual net; a plain net would start dead")
    if stride_in not in specs.STRIDE_PLACEMENTS:
        raise ValueError(f"stride_in={stride_in!r} is not one of {specs.STRIDE_PLACEMENTS}")
    momentum, epsilon = bn
    if not _is_number(epsilon) or not epsilon > 0:
        raise ValueError(f"bn_epsilon={epsilon!r} must be a number > 0 (it keeps BN from dividing by zero)")
    if not _is_number(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"bn_momentum={momentum!r} must be a number with 0 <= bn_momentum < 1")
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


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


@keras.saving.register_keras_serializable(package="keras_resnet")
class Network(keras.Model):
    """A keras_resnet network: a Functional model carrying its `record` (a `record.Record`).

    Its config is the record, so `model.save("x.keras")` stores what the network is and what
    its weights expect, and loading the file rebuilds it from the record (keras-hub's
    Functional-subclass backbones work the same way).
    """

    def __init__(self, inputs, outputs, record, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.record = record

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "record": self.record.to_json()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = from_record(Record.from_json(config["record"]), name=config.get("name"))
        model.trainable = config.get("trainable", True)
        return model


def build(
    spec,
    *,
    residual=True,
    shortcut=None,
    stride_in=None,
    zero_init_residual=False,
    bn_momentum=None,
    bn_epsilon=None,
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
    """Build the network of `spec` (a `specs.NetSpec`) as a `Network` carrying its record.

    `residual=False` gives the plain net of the same stacks (section 4.1). `weights` is None,
    "imagenet" or a path (see `keras_resnet.weights`); the network the weights record is
    rebuilt, so shortcut, stride_in, bn_epsilon, bn_momentum, classes and input_shape left
    at None take the recorded values, and an explicit value the weights contradict is a
    ValueError naming both. Without weights None means the paper's choice: shortcut B for
    ImageNet nets and A for CIFAR nets, stride in the first 1x1, epsilon 1.001e-5 (as
    keras.applications), momentum 0.9, 1000 / 10 classes, 224 / 32 pixels square.
    `return_features=True` (with include_top=False) returns a backbone whose outputs are the
    dict {"C2": conv2_x, ..., "C5": conv5_x} used by detectors (section 4.3).
    """
    if return_features and include_top:
        raise ValueError("return_features=True builds a backbone without a head: pass include_top=False")
    given = {
        "shortcut": shortcut,
        "stride_in": stride_in,
        "bn_epsilon": bn_epsilon,
        "bn_momentum": bn_momentum,
        "classes": classes,
        "input_shape": None if input_shape is None else tuple(input_shape),
        "include_top": include_top,
        "pooling": pooling,
        "classifier_activation": classifier_activation,
    }
    source = None
    if weights is not None:
        source = weights_lib.open_weights(weights, spec, residual, given)
    architecture = architecture_of(spec, residual, source.record if source else None, **given)
    _validate(
        spec,
        residual,
        architecture.shortcut,
        architecture.stride_in,
        zero_init_residual,
        pooling,
        architecture.classes if include_top else (DEFAULT_CLASSES[spec.stem] if classes is None else classes),
        architecture.input_shape,
        (architecture.bn_momentum, architecture.bn_epsilon),
    )
    extras = {
        "zero_init_residual": zero_init_residual,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
    }
    record = _record_for(architecture, source.record if source else None)
    model = _network(record, extras, input_tensor, return_features, name)
    if source is not None:
        source.load(model, from_record)
    return model


def architecture_of(spec, residual, recorded=None, **given):
    """The `Architecture` a builder call makes: the given arguments, else what the weights
    record (`recorded`, a Record or None), else the defaults."""
    found = recorded.architecture if recorded is not None else None
    include_top = given.get("include_top", True)
    keeps_head = include_top and found is not None and found.include_top

    def pick(arg, default, recorded_here=found is not None):
        if given.get(arg) is not None:
            return given[arg]
        if recorded_here and getattr(found, arg) is not None:
            return getattr(found, arg)
        return default

    size = DEFAULT_SIZE[spec.stem] if include_top else None
    return Architecture(
        spec=spec,
        residual=residual,
        shortcut=pick("shortcut", DEFAULT_SHORTCUT[spec.stem]) if residual else given.get("shortcut"),
        stride_in=pick("stride_in", "1x1"),
        bn_epsilon=pick("bn_epsilon", DEFAULT_BN_EPSILON),
        include_top=include_top,
        classes=pick("classes", DEFAULT_CLASSES[spec.stem], keeps_head) if include_top else None,
        bn_momentum=pick("bn_momentum", DEFAULT_BN_MOMENTUM),
        pooling=given.get("pooling"),
        classifier_activation=given.get("classifier_activation", "softmax") if include_top else None,
        input_shape=tuple(pick("input_shape", (size, size, 3), keeps_head)),
    )


def _record_for(architecture, recorded):
    """The record of a network built with `architecture` from weights that record `recorded`:
    what the weights expect carries over; class names only while the same head is kept."""
    if recorded is None:
        return Record(architecture)
    same_head = architecture.include_top and recorded.architecture.include_top
    return recorded.replace(architecture=architecture, class_names=recorded.class_names if same_head else None)


def from_record(record, *, input_tensor=None, return_features=False, name=None, **extras):
    """A `Network` of `record`'s architecture carrying `record`, with fresh weights. `extras`:
    zero_init_residual, kernel_initializer, kernel_regularizer (training settings the
    record does not hold)."""
    a = record.architecture
    classes = a.classes if a.include_top else DEFAULT_CLASSES[a.spec.stem]
    bn = (a.bn_momentum, a.bn_epsilon)
    zero_init = extras.get("zero_init_residual", False)
    _validate(a.spec, a.residual, a.shortcut, a.stride_in, zero_init, a.pooling, classes, a.input_shape, bn)
    return _network(record, extras, input_tensor, return_features, name)


def _network(record, extras, input_tensor, return_features, name):
    """The layers of `record`'s architecture (blocks.py), wrapped as a Network."""
    a = record.architecture
    settings = BlockSettings(
        residual=a.residual,
        shortcut=a.shortcut,
        stride_in=a.stride_in,
        zero_init_residual=extras.get("zero_init_residual", False),
        bn_momentum=a.bn_momentum,
        bn_epsilon=a.bn_epsilon,
        kernel_initializer=extras.get("kernel_initializer", "he_normal"),
        kernel_regularizer=extras.get("kernel_regularizer"),
    )
    inputs, user_tensor = _input(input_tensor, tuple(a.input_shape))
    x = STEMS[a.spec.stem](inputs, settings)
    features = {}
    for index in range(len(a.spec.widths)):
        x = stage(x, a.spec, index, settings)
        features[f"C{index + 2}"] = x
    if return_features:
        outputs = features
    else:
        outputs = _head(x, a.spec, a.include_top, a.pooling, a.classes, a.classifier_activation)
    model_inputs = keras.utils.get_source_inputs(user_tensor) if user_tensor is not None else inputs
    with _deep_graph_recursion(a.spec):
        return Network(model_inputs, outputs, record, name=name or a.name)


def default_name(spec, residual):
    """`resnet50`, `plain34`, `resnet56`: the registry name of a spec."""
    return f"{'resnet' if residual else 'plain'}{spec.depth}"


REGISTRY = {}
_BUILD_SIGNATURE = inspect.signature(build)
# keras.applications' arguments first, in its order and with its defaults (weights excepted:
# None, as nothing is downloaded unasked), then keras_resnet's own, keyword-only.
_APPLICATIONS_ARGS = (
    "include_top",
    "weights",
    "input_tensor",
    "input_shape",
    "pooling",
    "classes",
    "classifier_activation",
    "name",
)


def _builder_signature():
    """The public builders' signature: keras.applications' arguments, then keras_resnet's."""
    params = _BUILD_SIGNATURE.parameters
    positional = [params[arg].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in _APPLICATIONS_ARGS]
    own = [p for arg, p in params.items() if arg not in _APPLICATIONS_ARGS and arg not in ("spec", "residual")]
    return inspect.Signature(positional + own, return_annotation=_BUILD_SIGNATURE.return_annotation)


BUILDER_SIGNATURE = _builder_signature()


def _register(spec, residual, family):
    """Make the public builder for one spec and record it in the registry."""
    shortcut_default = DEFAULT_SHORTCUT[spec.stem]
    kind = "ResNet" if residual else "Plain"
    public_name = f"{kind}{spec.depth}"

    def builder(*args, **kwargs):
        bound = BUILDER_SIGNATURE.bind(*args, **kwargs)
        return build(spec, residual=residual, **bound.arguments)

    builder.__name__ = builder.__qualname__ = public_name
    builder.__signature__ = BUILDER_SIGNATURE
    builder.__doc__ = (
        f"{kind}-{spec.depth} ({family}; {spec.block} blocks {spec.blocks_per_stage}"
        f"{', shortcut ' + shortcut_default + ' by default' if residual else ', no shortcuts'}).\n\n"
        "Arguments as keras.applications.ResNet50 (weights: None, 'imagenet' or a path), then "
        "keras_resnet's own; see `keras_resnet.build` for their meaning.\n"
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
