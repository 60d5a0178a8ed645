"""Builders against the paper's tables, published parameter counts and section 3.3."""

import inspect
import json
import os
import pydoc
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_resnet

# Widely published counts (torchvision's resnet18..152: convs without bias, BN, fc 1000).
PUBLISHED_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# Table 6: parameters of the CIFAR-10 ResNets, as the paper rounds them.
TABLE_6_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}

IMAGENET_NAMES = [f"{kind}{d}" for kind in ("resnet", "plain") for d in (18, 34, 50, 101, 152)]
CIFAR_NAMES = [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)] + [f"plain{d}" for d in (20, 32, 44, 56, 110)]


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def paper_rounding(count, label):
    digits = len(label.rstrip("M").split(".")[1])
    return f"{round(count / 1e6, digits):.{digits}f}M"


def layer_names(model, suffix):
    return [layer.name for layer in model.layers if layer.name.endswith(suffix)]


@pytest.mark.parametrize("depth", sorted(PUBLISHED_PARAMS))
def test_imagenet_parameter_counts_are_published_ones(depth, registered_model):
    assert trainable_params(registered_model(f"resnet{depth}")) == PUBLISHED_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(TABLE_6_PARAMS))
def test_cifar_parameter_counts_round_to_table_6(depth, registered_model):
    model = registered_model(f"resnet{depth}")
    assert paper_rounding(trainable_params(model), TABLE_6_PARAMS[depth]) == TABLE_6_PARAMS[depth]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_plain_and_residual_nets_are_equally_large(depth, registered_model):
    """Section 4.2: option A shortcuts add no parameters, so both nets match exactly."""
    assert trainable_params(registered_model(f"plain{depth}")) == trainable_params(registered_model(f"resnet{depth}"))


@pytest.mark.parametrize("builder", [keras_resnet.ResNet20, keras_resnet.ResNet34])
def test_projection_options_order_c_above_b_above_a(builder):
    a, b, c = (trainable_params(builder(shortcut=s)) for s in "ABC")
    assert c > b > a


def test_option_a_adds_nothing_over_plain_imagenet():
    assert trainable_params(keras_resnet.ResNet34(shortcut="A")) == trainable_params(keras_resnet.Plain34())


@pytest.mark.parametrize(
    "builder, shortcut, projections",
    [
        # B: a projection only where the shape changes (first block of each stage whose
        # input differs: conv3..5 for basic nets; also conv2 for bottlenecks, 64 -> 256).
        (keras_resnet.ResNet34, "B", 3),
        (keras_resnet.ResNet50, "B", 4),
        (keras_resnet.ResNet34, "C", 16),
        (keras_resnet.ResNet50, "C", 16),
        (keras_resnet.ResNet34, "A", 0),
        (keras_resnet.Plain34, None, 0),
    ],
)
def test_shortcut_options_place_projections_as_section_3_3(builder, shortcut, projections):
    model = builder(shortcut=shortcut) if shortcut else builder()
    assert len(layer_names(model, "_0_conv")) == projections
    assert len(layer_names(model, "_add")) == (0 if builder is keras_resnet.Plain34 else 16)


def test_option_a_is_subsampled_identity_with_zero_channels():
    """Section 3.3 A: stride-2 subsampling of the input, new channels all zero."""
    model = keras_resnet.ResNet20(shortcut="A")
    block_in = model.get_layer("conv2_block3_out").output
    shortcut = model.get_layer("conv3_block1_0_pad").output
    probe = keras.Model(model.input, [block_in, shortcut])
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    given, got = probe.predict(x, verbose=0)
    assert got.shape == (2, 16, 16, 32)
    np.testing.assert_array_equal(got[..., :16], given[:, ::2, ::2, :])
    np.testing.assert_array_equal(got[..., 16:], 0.0)


def test_stride_2_convs_pad_symmetrically_like_caffe():
    """A stride-2 3x3 conv equals a conv with one pixel of zeros on every side, not
    TensorFlow's 'SAME' (which pads only bottom/right at stride 2 for even inputs)."""
    import tensorflow as tf

    model = keras_resnet.ResNet18(input_shape=(64, 64, 3), include_top=False)
    conv = model.get_layer("conv3_block1_1_conv")
    kernel = conv.get_weights()[0]
    probe = keras.Model(model.input, [model.get_layer("conv2_block2_out").output, conv.output])
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    given, got = probe.predict(x, verbose=0)
    symmetric = tf.nn.conv2d(given, kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]]).numpy()
    same = tf.nn.conv2d(given, kernel, strides=2, padding="SAME").numpy()
    np.testing.assert_allclose(got, symmetric, rtol=1e-4, atol=1e-4)
    assert np.abs(got - same).max() > 1e-2


def test_stem_and_stage_shapes_are_table_1(registered_model):
    model = registered_model("resnet50")
    shapes = {
        name: model.get_layer(name).output.shape[1:]
        for name in (
            "conv1_relu",
            "pool1_pool",
            "conv2_block3_out",
            "conv3_block4_out",
            "conv4_block6_out",
            "conv5_block3_out",
        )
    }
    assert shapes == {
        "conv1_relu": (112, 112, 64),
        "pool1_pool": (56, 56, 64),
        "conv2_block3_out": (56, 56, 256),
        "conv3_block4_out": (28, 28, 512),
        "conv4_block6_out": (14, 14, 1024),
        "conv5_block3_out": (7, 7, 2048),
    }


@pytest.mark.parametrize("stride_in, strided", [("1x1", "conv3_block1_1_conv"), ("3x3", "conv3_block1_2_conv")])
def test_stride_in_places_the_stride(stride_in, strided):
    model = keras_resnet.ResNet50(stride_in=stride_in)
    strides = {name: model.get_layer(name).strides for name in ("conv3_block1_1_conv", "conv3_block1_2_conv")}
    assert strides[strided] == (2, 2)
    assert sorted(strides.values()) == [(1, 1), (2, 2)]


@pytest.mark.parametrize("name", [n for n in IMAGENET_NAMES + CIFAR_NAMES if n != "resnet1202"])
def test_every_builder_headless_output_shape(name):
    builder = keras_resnet.get_builder(name)
    spec = builder.spec
    input_size = 224 if spec.stem == "imagenet" else 32
    model = builder(include_top=False, input_shape=(input_size, input_size, 3))
    final = input_size // spec.downsampling
    assert model.output.shape == (None, final, final, spec.widths[-1] * spec.expansion)


@pytest.mark.parametrize(
    "builder", [keras_resnet.ResNet18, keras_resnet.ResNet50, keras_resnet.Plain34, keras_resnet.ResNet20]
)
@pytest.mark.parametrize("include_top, pooling", [(True, None), (False, None), (False, "avg"), (False, "max")])
def test_heads_and_pooling(builder, include_top, pooling):
    spec = builder.spec
    size = 64 if spec.stem == "imagenet" else 32
    model = builder(include_top=include_top, pooling=pooling, input_shape=(size, size, 3), classes=7)
    out = model.predict(np.zeros((2, size, size, 3), "float32"), verbose=0)
    channels = spec.widths[-1] * spec.expansion
    expected = {
        (True, None): (2, 7),
        (False, None): (2, size // spec.downsampling, size // spec.downsampling, channels),
        (False, "avg"): (2, channels),
        (False, "max"): (2, channels),
    }[(include_top, pooling)]
    assert out.shape == expected
    if include_top:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "builder, expected",
    [
        (keras_resnet.ResNet50, {"C2": (56, 56, 256), "C3": (28, 28, 512), "C4": (14, 14, 1024), "C5": (7, 7, 2048)}),
        (keras_resnet.ResNet18, {"C2": (56, 56, 64), "C3": (28, 28, 128), "C4": (14, 14, 256), "C5": (7, 7, 512)}),
        (keras_resnet.ResNet20, {"C2": (32, 32, 16), "C3": (16, 16, 32), "C4": (8, 8, 64)}),
    ],
)
def test_feature_maps_for_detection(builder, expected):
    size = 224 if builder.spec.stem == "imagenet" else 32
    model = builder(include_top=False, return_features=True, input_shape=(size, size, 3))
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == expected


def test_non_square_and_larger_inputs_run_fully_convolutionally():
    model = keras_resnet.ResNet50(include_top=False)
    out = model.predict(np.zeros((1, 320, 256, 3), "float32"), verbose=0)
    assert out.shape == (1, 10, 8, 2048)
    fixed = keras_resnet.ResNet50(input_shape=(320, 256, 3), classes=5)
    assert fixed.predict(np.zeros((1, 320, 256, 3), "float32"), verbose=0).shape == (1, 5)


def test_zero_init_residual_makes_blocks_start_as_identity():
    """With the last BN gamma at 0 a block's residual branch is 0, so an identity block
    outputs relu(input) = input (Goyal et al.'s trick, an option beyond the paper)."""
    model = keras_resnet.ResNet20(zero_init_residual=True)
    probe = keras.Model(
        model.input, [model.get_layer("conv2_block1_out").output, model.get_layer("conv2_block3_out").output]
    )
    first, third = probe.predict(np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32"), verbose=0)
    np.testing.assert_array_equal(first, third)
    assert float(np.abs(first).max()) > 0


def test_bn_and_kernel_settings_reach_every_layer():
    reg = keras.regularizers.L2(1e-4)
    model = keras_resnet.ResNet20(
        bn_momentum=0.97, bn_epsilon=1e-3, kernel_initializer="glorot_uniform", kernel_regularizer=reg
    )
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(bns) == len(convs) == 19
    assert {(l.momentum, l.epsilon) for l in bns} == {(0.97, 1e-3)}
    assert all(isinstance(l.kernel_initializer, keras.initializers.GlorotUniform) for l in convs)
    assert all(l.kernel_regularizer is reg for l in convs)
    assert all(not l.use_bias for l in convs)


def test_layer_names_match_keras_applications_where_layers_correspond():
    ours = {l.name for l in keras_resnet.ResNet50().layers if l.weights}
    peer = {l.name for l in keras.applications.ResNet50(weights=None).layers if l.weights}
    assert ours == peer


def test_input_tensor_is_used():
    tensor = keras.Input(shape=(48, 48, 3))
    model = keras_resnet.ResNet18(input_tensor=tensor, include_top=False, pooling="avg")
    assert model.inputs[0] is tensor
    assert model.output.shape == (None, 512)


def test_cifar_generic_builder_takes_any_n():
    model = keras_resnet.CifarResNet(n=2)
    assert len([l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]) == 14
    assert model.name == "resnet14"
    assert keras_resnet.CifarResNet(n=2, plain=True).name == "plain14"


def test_registry_lists_every_paper_net():
    assert set(keras_resnet.list_models()) == set(IMAGENET_NAMES + CIFAR_NAMES)
    assert keras_resnet.get_builder("ResNet-50") is keras_resnet.ResNet50
    with pytest.raises(ValueError, match=r"model='resnet51'.*resnet50"):
        keras_resnet.get_builder("resnet51")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shortcut": "D"}, r"shortcut='D'.*\('A', 'B', 'C'\)"),
        ({"stride_in": "2x2"}, r"stride_in='2x2'.*\('1x1', '3x3'\)"),
        ({"classes": 0}, r"classes=0.*>= 1"),
        ({"input_shape": (16, 16, 3)}, r"\(16, 16, 3\).*>= 32"),
        ({"pooling": "median", "include_top": False}, r"pooling='median'.*None, 'avg', 'max'"),
        ({"return_features": True}, r"include_top=False"),
        ({"bn_epsilon": -1}, r"bn_epsilon=-1.*> 0"),
        ({"bn_epsilon": 0.0}, r"bn_epsilon=0.0.*> 0"),
        ({"bn_momentum": 1.5}, r"bn_momentum=1.5.*0 <= bn_momentum < 1"),
        ({"bn_momentum": 1.0}, r"bn_momentum=1.0.*0 <= bn_momentum < 1"),
        ({"bn_momentum": -0.1}, r"bn_momentum=-0.1.*0 <= bn_momentum < 1"),
    ],
)
def test_bad_arguments_name_value_and_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_resnet.ResNet50(**kwargs)


def test_plain_nets_refuse_shortcut_options():
    with pytest.raises(ValueError, match="shortcut='B'.*plain"):
        keras_resnet.Plain34(shortcut="B")
    with pytest.raises(ValueError, match="zero_init_residual"):
        keras_resnet.Plain20(zero_init_residual=True)


@pytest.mark.parametrize("kwargs", [{"bn_epsilon": -1}, {"bn_momentum": 1.5}])
def test_cifar_builders_refuse_bn_settings_too(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        keras_resnet.ResNet20(**kwargs)


def test_signature_has_keras_applications_arguments_in_order():
    """`inspect.signature` and `help` show keras.applications' arguments by name, in its order,
    with its defaults where keras_resnet keeps them (weights, classes and name are None: nothing
    is downloaded unasked, and classes/name come from the weights or the spec)."""
    ours = inspect.signature(keras_resnet.ResNet50).parameters
    theirs = inspect.signature(keras.applications.ResNet50).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        if name not in ("weights", "classes", "name"):
            assert ours[name].default == parameter.default, name
    for own in ("shortcut", "stride_in", "bn_epsilon", "bn_momentum", "zero_init_residual", "return_features"):
        assert ours[own].kind is inspect.Parameter.KEYWORD_ONLY
    shown = pydoc.render_doc(keras_resnet.ResNet50, renderer=pydoc.plaintext)
    assert "include_top=True" in shown and "classifier_activation='softmax'" in shown


def test_positional_arguments_bind_as_in_keras_applications():
    model = keras_resnet.ResNet20(False, None, None, (32, 32, 3), "avg")
    assert model.output_shape == (None, 64)
    with pytest.raises(TypeError, match="stride"):
        keras_resnet.ResNet20(stride="1x1")


# channels_first: the layout keras.applications follows from keras.config.image_data_format().


@pytest.fixture
def channels_first():
    """Keras' image data format set to channels_first for one test, then restored."""
    before = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(before)


def test_builders_follow_the_image_data_format(channels_first):
    model = keras_resnet.ResNet18(include_top=False, input_shape=(3, 64, 96))
    assert model.output.shape == (None, 512, 2, 3)
    assert model.get_layer("conv1_bn").axis == 1
    architecture = model.record.architecture
    assert architecture.data_format == "channels_first"
    assert architecture.input_shape == (64, 96, 3)  # records say (height, width, channels) in either layout
    assert keras_resnet.ResNet20(include_top=False, data_format="channels_last").output.shape == (None, None, None, 64)


@pytest.mark.parametrize(
    "builder, expected",
    [
        pytest.param(
            keras_resnet.ResNet18,
            {"C2": (64, 16), "C3": (128, 8), "C4": (256, 4), "C5": (512, 2)},
            marks=pytest.mark.slow,
        ),
        (keras_resnet.ResNet20, {"C2": (16, 64), "C3": (32, 32), "C4": (64, 16)}),
    ],
)
def test_channels_first_features_heads_and_flops(builder, expected):
    kwargs = {"include_top": False, "input_shape": (3, 64, 64), "data_format": "channels_first"}
    features = builder(return_features=True, **kwargs)
    assert {k: tuple(v.shape) for k, v in features.output.items()} == {
        k: (None, c, s, s) for k, (c, s) in expected.items()
    }
    assert builder(pooling="max", **kwargs).output.shape == (None, expected[max(expected)][0])
    last = builder(include_top=True, input_shape=(64, 64, 3), data_format="channels_last")
    first = builder(include_top=True, input_shape=(3, 64, 64), data_format="channels_first")
    assert keras_resnet.count_flops(first) == keras_resnet.count_flops(last)
    assert keras_resnet.count_flops(first, input_shape=(3, 128, 128)) == keras_resnet.count_flops(
        last, input_shape=(128, 128, 3)
    )


def test_option_a_pads_the_channel_axis_of_either_layout():
    """The zero channels of shortcut A follow the input's channels on the channel axis."""
    from keras_resnet.blocks import ZeroPadShortcut

    x = np.random.default_rng(2).normal(size=(2, 6, 6, 16)).astype("float32")
    expected = np.concatenate([x[:, ::2, ::2, :], np.zeros((2, 3, 3, 16), "float32")], axis=-1)
    last = ZeroPadShortcut(32, 2, "channels_last")
    first = ZeroPadShortcut(32, 2, "channels_first")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(last(x)), expected)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(first(x.transpose(0, 3, 1, 2))), expected.transpose(0, 3, 1, 2)
    )
    assert first.compute_output_shape((None, 16, 6, 6)) == (None, 32, 3, 3)
    assert ZeroPadShortcut.from_config(first.get_config()).data_format == "channels_first"


def test_records_without_a_data_format_mean_channels_last():
    record = keras_resnet.ResNet20().record
    data = record.to_json()
    assert data["architecture"]["data_format"] == "channels_last"
    del data["architecture"]["data_format"]
    assert keras_resnet.Record.from_json(data).architecture.data_format == "channels_last"
    first = keras_resnet.ResNet20(data_format="channels_first").record
    assert keras_resnet.Record.from_text(first.to_text()) == first


def test_a_bad_data_format_or_input_shape_names_the_value():
    with pytest.raises(ValueError, match=r"data_format='channels_middle' is not one of"):
        keras_resnet.ResNet20(data_format="channels_middle")
    with pytest.raises(ValueError, match=r"input_shape=\(32, 32\) must be \(channels, height, width\)"):
        keras_resnet.ResNet20(data_format="channels_first", input_shape=(32, 32))


@pytest.mark.slow
def test_a_channels_first_keras_file_is_served_as_its_channels_last_twin(tmp_path):
    """Serving graphs take (height, width, channels) images: the exporters' source is the
    same network rebuilt channels_last, with the same weights, and records channels_last."""
    from keras_resnet.export import sources

    model = keras_resnet.ResNet20(data_format="channels_first", classifier_activation=None)
    path = str(tmp_path / "r20.keras")
    model.save(path)
    source = sources.from_keras_file(path, preprocess_mode="pixel_mean", mean=np.zeros(3, "float32"))
    assert source.model.input_shape == (None, 32, 32, 3)
    assert source.record.architecture.data_format == "channels_last"
    for mine, theirs in zip(source.model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


JAX_CHANNELS_FIRST = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_resnet
    assert keras.backend.backend() == "jax", keras.backend.backend()
    files = json.loads(sys.argv[1])
    x = np.load(files["photos224"])
    for data_format, batch in (("channels_last", x), ("channels_first", x.transpose(0, 3, 1, 2))):
        model = keras_resnet.ResNet50(weights=files["keras_applications"], classifier_activation=None,
                                      data_format=data_format)
        np.save(files[f"resnet50_{data_format}"], keras.ops.convert_to_numpy(model(batch, training=False)))
        backbone = keras_resnet.ResNet20(weights=files["own"], include_top=False, return_features=True,
                                         data_format=data_format)
        x32 = np.load(files["photos32"])
        features = backbone(x32.transpose(0, 3, 1, 2) if data_format == "channels_first" else x32, training=False)
        for key, value in features.items():
            np.save(files[f"resnet20_{key}_{data_format}"], keras.ops.convert_to_numpy(value))
    """
)


@pytest.mark.slow
def test_channels_first_on_jax_gives_the_channels_last_outputs(tmp_path, rel_diff):
    """On JAX (NCHW convolutions on a CPU), keras.applications' weights layout and
    keras_resnet's own file load into a channels_first net that gives the channels_last
    outputs on the transposed batch: ResNet-50 logits and ResNet-20's features (shortcut A),
    nets with trained-like BN statistics, real photos. keras.applications itself on
    TensorFlow is the reference for the channels_last run."""
    pytest.importorskip("jax", reason="jax is in the dev extras; install it to run the backend check")
    from test_weights import write_published_h5

    from keras_resnet.testing import sample_photos, with_trained_statistics

    files = {name: str(tmp_path / f"{name}.npy") for name in ("photos224", "photos32")}
    files.update(keras_applications=str(tmp_path / "resnet50.h5"), own=str(tmp_path / "resnet20.weights.h5"))
    photos = keras_resnet.preprocess_input(sample_photos(224, count=4), "caffe")
    reference = with_trained_statistics(keras.applications.ResNet50(weights=None, classifier_activation=None), photos)
    write_published_h5(reference, files["keras_applications"])
    small = keras_resnet.preprocess_input(sample_photos(32, count=8, seed=1), "caffe")
    resnet20 = with_trained_statistics(keras_resnet.ResNet20(include_top=False, shortcut="A"), small, seed=1)
    keras_resnet.weights.save(resnet20, files["own"], "caffe")
    np.save(files["photos224"], photos)
    np.save(files["photos32"], small)
    for data_format in ("channels_last", "channels_first"):
        files[f"resnet50_{data_format}"] = str(tmp_path / f"resnet50_{data_format}.npy")
        for key in ("C2", "C3", "C4"):
            files[f"resnet20_{key}_{data_format}"] = str(tmp_path / f"resnet20_{key}_{data_format}.npy")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_CHANNELS_FIRST, json.dumps(files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last, first = (np.load(files[f"resnet50_{f}"]) for f in ("channels_last", "channels_first"))
    assert rel_diff(last, keras.ops.convert_to_numpy(reference(photos, training=False))) <= 1e-5
    print(f"ResNet-50 on JAX: channels_first vs channels_last {rel_diff(first, last):.2e} relative")
    assert rel_diff(first, last) <= 1e-5
    assert np.std(last) > 0.1  # logits of a classifier, not a collapsed net
    features = keras_resnet.ResNet20(include_top=False, return_features=True)
    features.set_weights(resnet20.get_weights())
    for key, expected in features(small, training=False).items():
        last, first = (np.load(files[f"resnet20_{key}_{f}"]) for f in ("channels_last", "channels_first"))
        assert rel_diff(last, keras.ops.convert_to_numpy(expected)) <= 1e-5, key
        assert rel_diff(first.transpose(0, 2, 3, 1), last) <= 1e-5, key
