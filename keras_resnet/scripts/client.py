"""Send images to a TF Serving model exported by export/to_saved_model.py; print the top classes.

    python export/client.py --server localhost:8500 --model_name resnet20 cat.jpg dog.png
    python export/client.py --rest_url http://localhost:8501 --model_name resnet20 cat.jpg
    python export/client.py --server localhost:8500 --model_name resnet20 --version_label stable cat.jpg

The encoded files go to the `serve_image_bytes` signature (gRPC PredictRequest, or REST
{"instances": [{"b64": ...}]}); the server decodes, resizes and centre-crops them.
"""

from absl import app, flags

from keras_resnet.scripts import run_program

flags.DEFINE_string("server", None, "TF Serving gRPC address host:port (the container's 8500).")
flags.DEFINE_string("rest_url", None, "TF Serving REST base URL, e.g. http://localhost:8501 (instead of --server).")
flags.DEFINE_string("model_name", None, "The served model's name (its directory under the base path).", required=True)
flags.DEFINE_integer("version", None, "A specific version (default: the newest TF Serving loaded).")
flags.DEFINE_string("version_label", None, "The version models.config labels so (e.g. stable; instead of --version).")
flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the server's answer; past it, an error names the server.")
FLAGS = flags.FLAGS


def run(argv):
    paths = argv[1:]
    if bool(FLAGS.server) == bool(FLAGS.rest_url):
        raise app.UsageError("give exactly one of --server (gRPC) and --rest_url (REST)")
    from keras_resnet.export import client

    images = client.read_images(paths)
    which = {"version": FLAGS.version, "version_label": FLAGS.version_label, "timeout": FLAGS.timeout, "labels": paths}
    if FLAGS.server:
        predictions = client.predict_grpc(FLAGS.server, FLAGS.model_name, images, **which)
    else:
        predictions = client.predict_rest(FLAGS.rest_url, FLAGS.model_name, images, **which)
    print(client.format_predictions(paths, predictions))


def main():
    """`keras-resnet-client`, and `python export/client.py`."""
    run_program(__name__, run)
