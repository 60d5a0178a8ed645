"""TF Serving's extras beside a SavedModel: warm-up records and the models.config file.

Both are built with the tensorflow-serving-api protos, so TF Serving parses them as it
parses its own.
"""

from __future__ import annotations

import os

import numpy as np

from keras_resnet.export.graph import BYTES_SIGNATURE, FLOAT_SIGNATURE, IMAGE_BYTES, IMAGES
from keras_resnet.training import saved_run

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"


def warmup_requests(model_name, image_size, png_bytes):
    """One PredictionLog per signature (batch 1), so the first real request is not slow."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    inputs = {
        FLOAT_SIGNATURE: (IMAGES, tf.make_tensor_proto(np.full((1, *image_size, 3), 128.0, dtype="float32"))),
        BYTES_SIGNATURE: (IMAGE_BYTES, tf.make_tensor_proto([png_bytes], dtype=tf.string, shape=[1])),
    }
    logs = []
    for signature, (name, tensor) in inputs.items():
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        request.inputs[name].CopyFrom(tensor)
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(saved_model_dir, model_name, image_size):
    """Write `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog) into the dir."""
    import tensorflow as tf

    gray = tf.io.encode_png(tf.fill((*image_size, 3), tf.constant(128, tf.uint8))).numpy()
    path = os.path.join(saved_model_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, image_size, gray):
            writer.write(log.SerializeToString())
    return path


def integer_versions(model_base):
    """The integer version dirs under `<base>/<model_name>` (what TF Serving would load)."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(n) for n in os.listdir(model_base) if n.isdigit() and os.path.isdir(os.path.join(model_base, n)))


def models_config_text(base_path, serving_base="/models"):
    """model_config_list (text proto) naming every model under `base_path` that has a version.

    `serving_base` is where the base path is mounted for TF Serving (the container's /models);
    None writes the local absolute paths.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(os.listdir(base_path)):
        if integer_versions(os.path.join(base_path, name)):
            root = os.path.abspath(base_path) if serving_base is None else serving_base.rstrip("/")
            entry = config.model_config_list.config.add()
            entry.name = name
            entry.base_path = f"{root}/{name}"
            entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def write_models_config(base_path, serving_base="/models"):
    """Write `<base_path>/models.config` atomically; returns its path."""
    path = os.path.join(base_path, MODELS_CONFIG)
    saved_run.atomic_write_bytes(path, models_config_text(base_path, serving_base).encode())
    return path


def serving_instructions(base_path, model_name):
    """How to serve `<base_path>` with the tensorflow/serving container and query it."""
    base = os.path.abspath(base_path)
    return f"""Serve it with TF Serving (REST on 8501, gRPC on 8500):
  docker run --rm -p 8500:8500 -p 8501:8501 -v {base}:/models tensorflow/serving \\
      --model_config_file=/models/{MODELS_CONFIG}
Query it over REST (the bytes signature decodes, resizes and crops on the server):
  printf '{{"signature_name": "serve_image_bytes", "instances": [{{"b64": "%s"}}]}}' "$(base64 -w0 IMAGE.png)" \\
      | curl -s -d @- http://localhost:8501/v1/models/{model_name}:predict
or with the Python client (gRPC, or --rest_url http://localhost:8501):
  python export/client.py --server localhost:8500 --model_name {model_name} IMAGE.png [IMAGE.jpg ...]"""
