"""Client side of TF Serving for the exported classifier: gRPC PredictRequest and REST JSON.

Requests carry encoded JPEG/PNG bytes to the `serve_image_bytes` signature (the server
decodes, resizes and crops); responses are parsed into the top-k classes of each image.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from keras_resnet.export.graph import BYTES_SIGNATURE, CLASS_NAMES, IMAGE_BYTES

Prediction = collections.namedtuple("Prediction", ["class_id", "score", "class_name"])


def read_images(paths):
    """The bytes of each image file, refusing a path that is not a file."""
    if not paths:
        raise ValueError("no image given: pass one or more JPEG/PNG paths")
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"image {path!r} is not a file")
    result = []
    for path in paths:
        with open(path, "rb") as f:
            result.append(f.read())
    return result


def predictions_from_outputs(classes, scores, names=None):
    """Per image, its [Prediction] best first, from the signature's top-k outputs."""
    classes, scores = np.asarray(classes), np.asarray(scores)
    if classes.shape != scores.shape or classes.ndim != 2:
        raise ValueError(f"top_k_classes {classes.shape} and top_k_scores {scores.shape} must both be [batch, k]")
    names = np.full(classes.shape, None, dtype=object) if names is None else np.asarray(names, dtype=object)
    return [
        [Prediction(int(c), float(s), n.decode() if isinstance(n, bytes) else n) for c, s, n in zip(*row)]
        for row in zip(classes, scores, names)
    ]


def check_version(version, version_label):
    """Refuse asking for both a version number and a version label."""
    if version is not None and version_label is not None:
        raise ValueError(f"give a version ({version}) or a version label ({version_label!r}), not both")


def predict_request(model_name, images, *, signature=BYTES_SIGNATURE, version=None, version_label=None):
    """A gRPC PredictRequest sending encoded images [batch] to the bytes signature of the
    newest version, or of `version`, or of the version models.config labels `version_label`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    check_version(version, version_label)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    if version_label is not None:
        request.model_spec.version_label = version_label
    request.inputs[IMAGE_BYTES].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    return request


def parse_predict_response(response):
    """The top-k Predictions per image of a gRPC PredictResponse."""
    import tensorflow as tf

    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    missing = {"top_k_classes", "top_k_scores"} - set(outputs)
    if missing:
        raise ValueError(f"response lacks outputs {sorted(missing)}; it has {sorted(outputs)}")
    return predictions_from_outputs(outputs["top_k_classes"], outputs["top_k_scores"], outputs.get(CLASS_NAMES))


def rest_body(images, *, signature=BYTES_SIGNATURE):
    """The REST predict body: row format, one {"b64": ...} instance per image."""
    return {
        "signature_name": signature,
        "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
    }


def rest_url(base_url, model_name, version=None, version_label=None):
    """`<base>/v1/models/<name>[/versions/<v> | /labels/<label>]:predict`, TF Serving's REST
    predict endpoint."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"REST url {base_url!r} must start with http:// or https://")
    check_version(version, version_label)
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    if version_label is not None:
        path += f"/labels/{urllib.parse.quote(version_label, safe='')}"
    return base_url.rstrip("/") + path + ":predict"


def parse_rest_response(body):
    """The top-k Predictions per image of a REST predict answer (row or columnar format)."""
    if "error" in body:
        raise ValueError(f"TF Serving answered an error: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        columns = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    elif "outputs" in body:
        columns = body["outputs"]
    else:
        raise ValueError(f"REST answer has neither 'predictions' nor 'outputs': keys {sorted(body)}")
    return predictions_from_outputs(columns["top_k_classes"], columns["top_k_scores"], columns.get(CLASS_NAMES))


def predict_rest(base_url, model_name, images, *, version=None, version_label=None, timeout=30.0):
    """POST the images to TF Serving's REST API; the top-k Predictions per image."""
    data = json.dumps(rest_body(images)).encode()
    request = urllib.request.Request(
        rest_url(base_url, model_name, version, version_label), data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return parse_rest_response(json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        raise ValueError(
            f"TF Serving answered HTTP {error.code}: {error.read().decode(errors='replace')[:500]}"
        ) from error


def predict_grpc(target, model_name, images, *, version=None, version_label=None, timeout=30.0):
    """Send the images over gRPC (host:port, TF Serving's 8500); the top-k Predictions per image."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request(model_name, images, version=version, version_label=version_label)
        response = stub.Predict(request, timeout=timeout)
    return parse_predict_response(response)


def format_predictions(labels, predictions):
    """Readable lines: each image's label, then its classes best first."""
    lines = []
    for label, ranked in zip(labels, predictions):
        lines.append(label)
        for rank, p in enumerate(ranked, 1):
            name = f" {p.class_name}" if p.class_name is not None else ""
            lines.append(f"  {rank}. class {p.class_id}{name}: {p.score:.4f}")
    return "\n".join(lines)
