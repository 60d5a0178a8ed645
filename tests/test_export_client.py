"""The serving client: gRPC and REST requests built by the client are answered by the
SavedModel's own signatures (as TF Serving would run them) and the answers parsed back.
A live TF Serving is tested only when TF_SERVING_URL is set."""

import base64
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_resnet
from keras_resnet import client_view
from keras_resnet.export import client, graph, saved_model, sources
from keras_resnet.export.graph import ServingGraph

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = tuple(f"digit {i}" for i in range(10))


def png(seed, size=(32, 32)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3)).astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    """The signatures of a ResNet-20 SavedModel with class names, loaded as TF Serving does."""
    source = sources.ModelSource(keras_resnet.get_builder("resnet20")(), "tf", class_names=NAMES, name="resnet20")
    path = str(tmp_path_factory.mktemp("client") / "1")
    saved_model.write_saved_model(ServingGraph(source), path, "resnet20")
    return tf.saved_model.load(path).signatures


def answer_grpc(signatures, request_bytes):
    """What TF Serving's Predict does with a serialized PredictRequest."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(request_bytes)
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    outputs = signatures[request.model_spec.signature_name](**inputs)
    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response.SerializeToString(), {k: v.numpy() for k, v in outputs.items()}


def answer_rest(signatures, body_text):
    """What TF Serving's REST predict does with a row-format body of {"b64": ...} instances."""
    body = json.loads(body_text)
    data = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
    outputs = {k: v.numpy() for k, v in signatures[body["signature_name"]](image_bytes=tf.constant(data)).items()}

    def plain(value):
        return value.decode() if isinstance(value, bytes) else value

    rows = [{k: [plain(x) for x in v[i].tolist()] for k, v in outputs.items()} for i in range(len(data))]
    return json.dumps({"predictions": rows}), outputs


def check_parsed(parsed, outputs):
    assert len(parsed) == len(outputs["top_k_classes"])
    for ranked, classes, scores, names in zip(
        parsed, outputs["top_k_classes"], outputs["top_k_scores"], outputs["class_names"]
    ):
        assert [p.class_id for p in ranked] == classes.tolist()
        np.testing.assert_allclose([p.score for p in ranked], scores, rtol=1e-6)
        assert [p.class_name for p in ranked] == [n.decode() for n in names] == [NAMES[c] for c in classes]


def test_grpc_request_is_answered_by_the_bytes_signature_and_parsed(signatures):
    request = client.predict_request("resnet20", [png(1), png(2, (48, 40))], version=3)
    assert (request.model_spec.name, request.model_spec.signature_name, request.model_spec.version.value) == (
        "resnet20",
        "serve_image_bytes",
        3,
    )
    response_bytes, outputs = answer_grpc(signatures, request.SerializeToString())
    from tensorflow_serving.apis import predict_pb2

    check_parsed(client.parse_predict_response(predict_pb2.PredictResponse.FromString(response_bytes)), outputs)


def test_a_version_label_is_asked_for_by_name(signatures):
    from tensorflow_serving.apis import predict_pb2

    request = client.predict_request("resnet20", [png(10)], version_label="stable")
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.version_label == "stable" and not parsed.model_spec.HasField("version")
    assert client.rest_url("http://h:8501", "r20", version_label="stable") == (
        "http://h:8501/v1/models/r20/labels/stable:predict"
    )
    with pytest.raises(ValueError, match="not both"):
        client.predict_request("resnet20", [png(10)], version=2, version_label="stable")


def test_rest_body_is_answered_by_the_bytes_signature_and_parsed(signatures):
    images = [png(3), png(4), png(5, (64, 64))]
    answer, outputs = answer_rest(signatures, json.dumps(client.rest_body(images)))
    check_parsed(client.parse_rest_response(json.loads(answer)), outputs)
    columnar = {
        "outputs": {
            k: [[x.decode() if isinstance(x, bytes) else x for x in row] for row in v.tolist()]
            for k, v in outputs.items()
        }
    }
    check_parsed(client.parse_rest_response(columnar), outputs)


def test_printed_predictions_name_the_classes(signatures):
    answer, _ = answer_rest(signatures, json.dumps(client.rest_body([png(6)])))
    text = client.format_predictions(["a.png"], client.parse_rest_response(json.loads(answer)))
    assert text.splitlines()[0] == "a.png" and len(text.splitlines()) == 6 and "digit" in text


def test_client_errors_are_clear(tmp_path):
    assert client.rest_url("http://h:8501/", "r20", 2) == "http://h:8501/v1/models/r20/versions/2:predict"
    with pytest.raises(ValueError, match="http://"):
        client.rest_url("h:8501", "r20")
    with pytest.raises(ValueError, match="not a file"):
        client.read_images([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="TF Serving answered an error"):
        client.parse_rest_response({"error": "Servable not found"})


def test_command_line_needs_exactly_one_server(tmp_path):
    (tmp_path / "a.png").write_bytes(png(7))
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.run(
        [sys.executable, "export/client.py", "--model_name", "r20", str(tmp_path / "a.png")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0 and "exactly one of --server" in process.stderr
    helped = subprocess.run(
        [sys.executable, "export/client.py", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert all(
        flag in helped.stdout
        for flag in ("--server", "--rest_url", "--model_name", "--version", "--version_label", "--timeout", "verbose")
    )
    stated = "--timeout: Seconds to wait for the server's answer; past it, an error names the server. (default: '30.0')"
    assert stated in " ".join(helped.stdout.split())


LIVE = os.environ.get("TF_SERVING_URL")
LIVE_REASON = (
    "TF_SERVING_URL is not set: set it to a running TF Serving's REST address (e.g. http://localhost:8501, "
    "optionally TF_SERVING_GRPC=localhost:8500 and TF_SERVING_MODEL, default resnet20) to test the client live"
)


@pytest.mark.skipif(not LIVE, reason=LIVE_REASON)
def test_live_tf_serving_answers_the_client():
    model = os.environ.get("TF_SERVING_MODEL", "resnet20")
    images = [png(8), png(9, (64, 48))]
    for predictions in [client.predict_rest(LIVE, model, images)] + (
        [client.predict_grpc(os.environ["TF_SERVING_GRPC"], model, images)] if os.environ.get("TF_SERVING_GRPC") else []
    ):
        assert len(predictions) == 2 and all(len(ranked) >= 1 for ranked in predictions)
        assert all(0.0 <= p.score <= 1.0 for ranked in predictions for p in ranked)


# Servers that fail, on loopback: a closed port, a port that accepts and never answers, and a
# REST server answering with the SavedModel's own signature (HTTP 400 where it fails).


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_closed_rest_port_names_the_url(closed_port):
    base = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(ConnectionError) as error:
        client.predict_rest(base, "r20", [png(11)], timeout=5)
    assert f"{base}/v1/models/r20:predict" in str(error.value) and "refused" in str(error.value)


def test_a_closed_grpc_port_names_the_server(closed_port):
    target = f"127.0.0.1:{closed_port}"
    with pytest.raises(ConnectionError, match=f"cannot reach TF Serving at {target} \\(gRPC\\)"):
        client.predict_grpc(target, "r20", [png(12)], timeout=5)


def test_a_silent_rest_server_times_out_naming_the_url(silent_port):
    base = f"http://127.0.0.1:{silent_port}"
    with pytest.raises(TimeoutError, match=f"{base}/v1/models/r20:predict did not answer within 0.5 s"):
        client.predict_rest(base, "r20", [png(13)], timeout=0.5)


def test_a_silent_grpc_server_times_out_naming_the_server(silent_port):
    target = f"127.0.0.1:{silent_port}"
    with pytest.raises(TimeoutError, match=f"{target} \\(gRPC\\) did not answer within 0.5 s"):
        client.predict_grpc(target, "r20", [png(14)], timeout=0.5)


@pytest.fixture(scope="module")
def rest_server(signatures):
    """A loopback REST server answering predict requests with the SavedModel's bytes
    signature, and HTTP 400 {"error": ...} where the signature fails, as TF Serving does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            try:
                status, answer = 200, answer_rest(signatures, body)[0]
            except tf.errors.InvalidArgumentError as error:
                status, answer = 400, json.dumps({"error": error.message})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_a_refused_batch_names_the_bad_image(rest_server):
    good = [png(15), png(16, (40, 36))]
    assert len(client.predict_rest(rest_server, "resnet20", good)) == 2
    truncated = png(17)[:60]
    with pytest.raises(client.RefusedRequest) as error:
        client.predict_rest(rest_server, "resnet20", [good[0], truncated, good[1]], labels=["a.png", "b.png", "c.png"])
    message = str(error.value)
    assert message.startswith("image 1 (b.png) of the batch was refused: TF Serving at http://127.0.0.1:")
    assert "answered HTTP 400" in message


@pytest.mark.slow
def test_command_line_connection_error_is_one_line(tmp_path, closed_port):
    (tmp_path / "a.png").write_bytes(png(18))
    url = f"http://127.0.0.1:{closed_port}"
    process = subprocess.run(
        [sys.executable, "export/client.py", "--rest_url", url, "--model_name", "r20", str(tmp_path / "a.png")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [
        line
        for line in process.stderr.splitlines()
        if line.strip() and not re.match(r"^([IWEF]\d{4} |WARNING: All log)", line)
    ]
    assert process.returncode == 1 and len(lines) == 1, process.stderr
    assert lines[0].startswith(f"error: cannot reach TF Serving at {url}/v1/models/r20:predict")


# The client-side centre view (NumPy and Pillow) against the served one.


def encoded_photo(image_format, height, width, seed):
    """A real photo (scikit-learn's samples) cut to an odd size, encoded as `image_format`
    (a JPEG at quality 90 with 4:2:0 chroma, the common camera and web subsampling)."""
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[seed % 2]
    options = {"quality": 90, "subsampling": 2} if image_format == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(photo[3 : 3 + height, 7 : 7 + width]).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def served_view(data, size, resize):
    """The pixels serve_image_bytes computes from encoded bytes (its own decode_centre_view)."""
    return graph.decode_centre_view(tf.constant(data), (size, size), resize, graph.MAX_PIXELS).numpy()


VIEWS = [(224, 256), (32, 32), (64, 73), (299, 342)]


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
@pytest.mark.parametrize("height, width", [(301, 457), (427, 333), (97, 131)])
def test_the_client_view_is_the_served_view(image_format, height, width):
    """Every pixel, the crop's edge columns included: Pillow and the served graph decode a
    4:2:0 JPEG alike, and a centre window inside the image reads its neighbours' colour."""
    data = encoded_photo(image_format, height, width, seed=height)
    for size, resize in VIEWS:
        top, left, side = client_view.centre_window(height, width, size, resize)
        if (size, resize) == (224, 256):
            assert 0 < top and top + side < height and 0 < left and left + side < width
        np.testing.assert_allclose(
            client_view.centre_view(data, size, resize), served_view(data, size, resize), atol=1e-4
        )


def test_client_view_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="size=0"):
        client_view.centre_view(png(19), 0, 32)
    with pytest.raises(ValueError, match="path or the bytes"):
        client_view.centre_view(np.zeros((4, 4, 3)), 4, 4)


@pytest.mark.slow
def test_the_client_view_imports_without_tensorflow():
    code = (
        "import importlib.abc, sys\n"
        "class NoTensorFlow(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
        "from keras_resnet.client_view import centre_view\n"
        "print(centre_view(sys.stdin.buffer.read(), 24, 28).shape, 'tensorflow' in sys.modules)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", code],
        input=png(20, (40, 30)),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "jax"},
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout.decode().split() == ["(24,", "24,", "3)", "False"]


@pytest.mark.slow
def test_litert_answers_on_the_client_view_are_the_saved_models_bytes_answers(tmp_path):
    litert = pytest.importorskip("keras_resnet.export.litert")
    pytest.importorskip(
        "ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'keras-resnet[serve-extra]')"
    )
    from ai_edge_litert.interpreter import Interpreter
    from export_helpers import trained_source

    source = trained_source("resnet20")
    serving = ServingGraph(source)
    saved_model.write_saved_model(serving, str(tmp_path / "1"), "resnet20")
    served = tf.saved_model.load(str(tmp_path / "1")).signatures[graph.BYTES_SIGNATURE]
    lite = litert.export_litert(source, str(tmp_path / "r20.tflite"), log=lambda line: None).paths["fp32"]
    runner = Interpreter(model_path=lite).get_signature_runner("serving_default")
    for data in (encoded_photo("PNG", 45, 61, 1), encoded_photo("JPEG", 53, 37, 2)):
        view = client_view.centre_view(data, 32, serving.resize)
        answer = runner(images=view[None])
        expected = served(image_bytes=tf.constant([data]))
        np.testing.assert_allclose(answer["probabilities"], expected["probabilities"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(answer["top_k_classes"], expected["top_k_classes"].numpy())
