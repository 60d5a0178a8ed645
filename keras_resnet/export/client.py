"""Client side of TF Serving for the exported classifier: gRPC PredictRequest and REST JSON.

Requests carry encoded JPEG/PNG bytes to the `serve_image_bytes` signature (the server
decodes, resizes and crops); responses are parsed into the top-k classes of each image.

Failures name the server: a server that cannot be reached is a ConnectionError, one that does
not answer within `timeout` seconds a TimeoutError, a refused request a `RefusedRequest`
(ValueError) saying which image of the batch the server refuses alone.
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
DEFAULT_TIMEOUT = 30.0


class RefusedRequest(ValueError):
    """The server answered that the request is bad (HTTP 400, gRPC INVALID_ARGUMENT)."""


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


def predict_rest(
    base_url, model_name, images, *, version=None, version_label=None, timeout=DEFAULT_TIMEOUT, labels=None
):
    """POST the images to TF Serving's REST API; the top-k Predictions per image. `labels`
    (e.g. file names) name a refused image in the error."""
    url = rest_url(base_url, model_name, version, version_label)

    def send(batch):
        return parse_rest_response(post_json(url, rest_body(batch), timeout))

    return naming_a_refused_image(send, images, labels)


def post_json(url, body, timeout):
    """TF Serving's JSON answer to `body` POSTed to `url`; errors name the URL."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read()
    except urllib.error.HTTPError as error:
        message = f"TF Serving at {url} answered HTTP {error.code}: {error.read().decode(errors='replace')[:500]}"
        raise (RefusedRequest if error.code == 400 else ValueError)(message) from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise silent(url, timeout) from error
        raise ConnectionError(f"cannot reach TF Serving at {url}: {error.reason}") from error
    except TimeoutError as error:
        raise silent(url, timeout) from error
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{url} answered something that is not JSON: {text[:200]!r}") from error


def silent(server, timeout):
    return TimeoutError(
        f"TF Serving at {server} did not answer within {timeout:g} s (a busy server: a longer --timeout)"
    )


def predict_grpc(target, model_name, images, *, version=None, version_label=None, timeout=DEFAULT_TIMEOUT, labels=None):
    """Send the images over gRPC (host:port, TF Serving's 8500); the top-k Predictions per image."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    def send(batch):
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_request(model_name, batch, version=version, version_label=version_label)
            try:
                response = stub.Predict(request, timeout=timeout)
            except grpc.RpcError as error:
                raise grpc_error(error, target, timeout) from error
        return parse_predict_response(response)

    return naming_a_refused_image(send, images, labels)


def grpc_error(error, target, timeout):
    """The exception a failed gRPC call is, naming the server."""
    import grpc

    code, details = error.code(), error.details()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return silent(f"{target} (gRPC)", timeout)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionError(f"cannot reach TF Serving at {target} (gRPC): {details}")
    message = f"TF Serving at {target} (gRPC) answered {code.name}: {details}"
    return RefusedRequest(message) if code == grpc.StatusCode.INVALID_ARGUMENT else ValueError(message)


def naming_a_refused_image(send, images, labels=None):
    """`send(images)`; where the server refuses the batch, the error names the first image it
    refuses alone (the server's own message names none)."""
    try:
        return send(images)
    except RefusedRequest as refused:
        if len(images) > 1:
            for index, image in enumerate(images):
                try:
                    send([image])
                except RefusedRequest as alone:
                    name = f" ({labels[index]})" if labels is not None else ""
                    raise RefusedRequest(f"image {index}{name} of the batch was refused: {alone}") from refused
        raise


def format_predictions(labels, predictions):
    """Readable lines: each image's label, then its classes best first."""
    lines = []
    for label, ranked in zip(labels, predictions):
        lines.append(label)
        for rank, p in enumerate(ranked, 1):
            name = f" {p.class_name}" if p.class_name is not None else ""
            lines.append(f"  {rank}. class {p.class_id}{name}: {p.score:.4f}")
    return "\n".join(lines)
