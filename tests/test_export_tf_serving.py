"""TF Serving's knobs beside the SavedModel: batching parameters chosen from measured
latencies, warm-up requests at every allowed batch size (run through the SavedModel's own
signatures), version labels in models.config (parsed with the serving protos), a hand-written
models.config entry kept and a malformed models.config refused before anything is written."""

import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import keras_resnet
from keras_resnet.export import saved_model, sources, tf_serving
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics


def test_batch_sizes_grow_while_throughput_does():
    # images/s: 100, 167, 200, 178, 178, 256: 8 and 16 serve fewer images than 4, 32 enough more
    latencies = {1: 0.010, 2: 0.012, 4: 0.020, 8: 0.045, 16: 0.090, 32: 0.125}
    parameters = tf_serving.choose_batching(latencies, num_batch_threads=2)
    assert list(parameters.allowed_batch_sizes) == [1, 2, 4, 32]
    assert parameters.max_batch_size.value == 32
    assert parameters.batch_timeout_micros.value == 10_000
    assert parameters.num_batch_threads.value == 2
    # 2 serves only 5 % more than 1: no batching gain, and a lone request waits 2 ms at most
    flat = tf_serving.choose_batching({1: 0.002, 2: 0.0038, 4: 0.0075}, num_batch_threads=1)
    assert list(flat.allowed_batch_sizes) == [1] and flat.batch_timeout_micros.value == 2_000


def test_bad_latencies_and_labels_are_refused():
    with pytest.raises(ValueError, match="start at batch 1"):
        tf_serving.choose_batching({2: 0.01, 4: 0.02}, num_batch_threads=1)
    with pytest.raises(ValueError, match="num_batch_threads"):
        tf_serving.choose_batching({1: 0.01}, num_batch_threads=0)
    for label in ("", "3", "a b", "x/y"):
        with pytest.raises(ValueError, match="version label"):
            tf_serving.check_label(label)


# A model served from elsewhere, as a user writes it by hand: TF Serving's own field names, a
# version policy and a label of its own.
HAND_WRITTEN = """model_config_list {
  config {
    name: "hand"
    base_path: "/elsewhere/hand"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "prod" value: 7 }
  }
}
"""


def parsed_config(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two versions of a trained-statistics ResNet-20 under one base path: the first with
    batching and the label stable, the second labelled canary."""
    model = keras_resnet.get_builder("resnet20")()
    with_trained_statistics(model, preprocess_input(sample_photos(32, 16), "tf"))
    source = sources.ModelSource(model, "tf", name="resnet20")
    base = str(tmp_path_factory.mktemp("serving"))
    with open(os.path.join(base, tf_serving.MODELS_CONFIG), "w") as f:
        f.write(HAND_WRITTEN)
    lines = []
    first = saved_model.export_saved_model(source, base, batching=True, version_label="stable", log=lines.append)
    second = saved_model.export_saved_model(source, base, version_label="canary", log=lines.append)
    return base, first, second, "\n".join(lines)


def test_batching_file_parses_and_follows_tf_servings_rules(exported):
    base, _, _, printed = exported
    parameters = tf_serving.read_batching_parameters(os.path.join(base, tf_serving.BATCHING_PARAMETERS))
    allowed = list(parameters.allowed_batch_sizes)
    assert allowed[0] == 1 and allowed == sorted(set(allowed)) and allowed[-1] == parameters.max_batch_size.value
    assert 0 < parameters.batch_timeout_micros.value <= 1e6 * tf_serving.MAX_BATCH_TIMEOUT_S
    assert parameters.num_batch_threads.value == os.cpu_count()
    assert "batching: measured batch 1" in printed
    assert "--enable_batching --batching_parameters_file=/models/batching_parameters.txt" in (
        tf_serving.serving_instructions(base, "resnet20")
    )


def test_warmup_covers_every_allowed_batch_size_and_runs(exported):
    base, first, second, _ = exported
    parameters = tf_serving.read_batching_parameters(os.path.join(base, tf_serving.BATCHING_PARAMETERS))
    allowed = list(parameters.allowed_batch_sizes)
    for version in (first, second):  # the second export was not asked to measure; it serves there too
        sizes = tf_serving.read_warmup_batch_sizes(os.path.join(version.path, tf_serving.WARMUP_PATH))
        assert sizes == {"serving_default": allowed, "serve_image_bytes": allowed}
    warmup = os.path.join(first.path, tf_serving.WARMUP_PATH)
    from tensorflow_serving.apis import prediction_log_pb2

    signatures = tf.saved_model.load(first.path).signatures
    for record in tf.data.TFRecordDataset(warmup).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
        outputs = signatures[request.model_spec.signature_name](**inputs)
        assert outputs["probabilities"].shape[0] == next(iter(inputs.values())).shape[0]
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_labels_are_kept_across_exports_and_their_versions_served(exported):
    base, first, second, _ = exported
    config = model_server_config_pb2.ModelServerConfig()
    with open(os.path.join(base, tf_serving.MODELS_CONFIG)) as f:
        text_format.Parse(f.read(), config)
    hand, entry = config.model_config_list.config
    assert hand == parsed_config(HAND_WRITTEN).model_config_list.config[0]
    assert (
        dict(entry.version_labels) == {"stable": first.version, "canary": second.version} == {"stable": 1, "canary": 2}
    )
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert "--allow_version_labels_for_unavailable_models" in tf_serving.serving_instructions(base, "resnet20")


def test_a_malformed_models_config_is_refused_naming_its_line_before_anything_is_written(tmp_path):
    broken = HAND_WRITTEN.replace("num_versions: 2", "num_versions: two")
    (tmp_path / tf_serving.MODELS_CONFIG).write_text(broken)
    source = sources.ModelSource(keras_resnet.get_builder("resnet20")(), "tf", name="third")
    with pytest.raises(
        ValueError, match=r"models.config' line 6 is not TF Serving's ModelServerConfig .*fix that line"
    ):
        saved_model.export_saved_model(source, str(tmp_path), log=print)
    assert os.listdir(tmp_path) == [tf_serving.MODELS_CONFIG]
    assert (tmp_path / tf_serving.MODELS_CONFIG).read_text() == broken
