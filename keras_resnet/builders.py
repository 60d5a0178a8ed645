"""The one generic builder, the public ResNetN / PlainN wrappers and their registry.

Every public builder is `build(spec, ...)` with a row of `specs`; arguments follow
keras.applications (`include_top, weights, input_tensor, input_shape, pooling, classes,
classifier_activation, name`), and so does the layout: `keras.config.image_data_format()`
unless `data_format=` says otherwise, with `input_shape` ordered as that layout orders it.
The registry holds a ResNet and a plain net for every row of the spec tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys

import keras
from keras import layers

from keras_resnet import specs
from keras_resnet import weights as weights_lib
from keras_resnet.blocks import STEMS, BlockSettings, stage
from keras_resnet.record import Architecture, Record
from keras_resnet.specs import DEFAULT_SHORTCUT

POOLINGS = (None, "avg", "max")
DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}
DEFAULT_SIZE = {"imagenet": 224, "cifar": 32}
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
    "data_format",
)


def _check_layout(data_format, input_shape=None):
    """The data format and the input shape in its order, checked before anything else."""
    if data_format not in specs.DATA_FORMATS:
        raise ValueError(f"data_format={data_format!r} is not one of {specs.DATA_FORMATS}")
    if input_shape is not None and len(input_shape) != 3:
        order = "(channels, height, width)" if data_format == "channels_first" else "(height, width, channels)"
        raise ValueError(f"input_shape={tuple(input_shape)!r} must be {order} for data_format={data_format!r}")


def _validate(spec, residual, shortcut, stride_in, zero_init_residual, pooling, classes, input_shape, bn):
    """Check every argument before any layer is made; messages name value and allowed ones.
    `input_shape` is (height, width, channels), as records hold it."""
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
    """An Input layer of `input_shape` (in the network's layout), or the user's tensor
    wrapped as keras.applications does."""
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="input"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="input"), input_tensor


def _head(x, architecture):
    """Global average pool + fc (Table 1), or the optional pooling of a headless net."""
    a = architecture
    if a.include_top:
        x = layers.GlobalAveragePooling2D(data_format=a.data_format, name="avg_pool")(x)
        return layers.Dense(a.classes, activation=a.classifier_activation, name="predictions")(x)
    if a.pooling == "avg":
        return layers.GlobalAveragePooling2D(data_format=a.data_format, name="avg_pool")(x)
    if a.pooling == "max":
        return layers.GlobalMaxPooling2D(data_format=a.data_format, name="max_pool")(x)
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
    data_format=None,
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
    `data_format` ("channels_last" or "channels_first") defaults to
    `keras.config.image_data_format()`, as in keras.applications; `input_shape` is in its
    order. Any weights load into either layout.
    """
    if return_features and include_top:
        raise ValueError("return_features=True builds a backbone without a head: pass include_top=False")
    data_format = data_format or keras.config.image_data_format()
    _check_layout(data_format, input_shape)
    given = {
        "shortcut": shortcut,
        "stride_in": stride_in,
        "bn_epsilon": bn_epsilon,
        "bn_momentum": bn_momentum,
        "classes": classes,
        "input_shape": specs.as_height_width_channels(input_shape and tuple(input_shape), data_format),
        "include_top": include_top,
        "pooling": pooling,
        "classifier_activation": classifier_activation,
        "data_format": data_format,
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
    record (`recorded`, a Record or None), else the defaults. The data format is the given
    one or Keras' setting, never the recorded one: weights fit either layout."""
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
        bn_epsilon=pick("bn_epsilon", specs.BN_EPSILON),
        include_top=include_top,
        classes=pick("classes", DEFAULT_CLASSES[spec.stem], keeps_head) if include_top else None,
        bn_momentum=pick("bn_momentum", specs.BN_MOMENTUM),
        pooling=given.get("pooling"),
        classifier_activation=given.get("classifier_activation", "softmax") if include_top else None,
        input_shape=tuple(pick("input_shape", (size, size, 3), keeps_head)),
        data_format=given.get("data_format") or keras.config.image_data_format(),
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
    _check_layout(a.data_format)
    _validate(a.spec, a.residual, a.shortcut, a.stride_in, zero_init, a.pooling, classes, a.input_shape, bn)
    return _network(record, extras, input_tensor, return_features, name)


def with_data_format(model, data_format):
    """`model` (a Network) in `data_format`, with the same weights: `model` itself when it has
    that layout already. Exports serve (height, width, channels) images whatever the layout."""
    _check_layout(data_format)
    a = model.record.architecture
    if a.data_format == data_format:
        return model
    record = model.record.replace(architecture=dataclasses.replace(a, data_format=data_format))
    twin = from_record(record, name=model.name)
    twin.set_weights(model.get_weights())
    return twin


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
        data_format=a.data_format,
    )
    inputs, user_tensor = _input(input_tensor, tuple(a.layout_input_shape))
    x = STEMS[a.spec.stem](inputs, settings)
    features = {}
    for index in range(len(a.spec.widths)):
        x = stage(x, a.spec, index, settings)
        features[f"C{index + 2}"] = x
    if return_features:
        outputs = features
    else:
        outputs = _head(x, a)
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
FAMILIES = {"imagenet": "ImageNet", "cifar": "CIFAR-10"}


def _builder_signature():
    """The public builders' signature: keras.applications' arguments, then keras_resnet's."""
    params = _BUILD_SIGNATURE.parameters
    positional = [params[arg].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in _APPLICATIONS_ARGS]
    own = [p for arg, p in params.items() if arg not in _APPLICATIONS_ARGS and arg not in ("spec", "residual")]
    return inspect.Signature(positional + own, return_annotation=_BUILD_SIGNATURE.return_annotation)


BUILDER_SIGNATURE = _builder_signature()


def _register(spec, residual):
    """Make the public builder for one spec and record it in the registry."""
    family = FAMILIES[spec.stem]
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


def _paper_nets():
    """(spec, residual) of every net of the spec tables: Table 1's ResNets and plain nets, the
    6n+2 ResNets of section 4.2 and its plain nets."""
    for depth in specs.IMAGENET_DEPTHS:
        yield from ((specs.imagenet_spec(depth), residual) for residual in (True, False))
    for depth, n in specs.CIFAR_DEPTHS.items():
        yield specs.cifar_spec(n), True
        if depth in specs.PLAIN_CIFAR_DEPTHS:
            yield specs.cifar_spec(n), False


# ResNet18 ... ResNet1202, Plain18 ... Plain110: one public builder per registered net.
_BUILDERS = [_register(spec, residual) for spec, residual in _paper_nets()]
globals().update({builder.__name__: builder for builder in _BUILDERS})
