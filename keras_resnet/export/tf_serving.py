"""TF Serving's extras beside a SavedModel: warm-up records, the models.config file (with
version labels) and batching parameters chosen from measured latencies.

Warm-up records and models.config are built with the tensorflow-serving-api protos, so TF
Serving parses them as it parses its own; an existing models.config is parsed and only the
exported model's entry changed. BatchingParameters (session_bundle_config.proto)
is not in that package: `batching_parameters_class` declares the same message, field for
field, so the file is written and read back by protobuf's own text format.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import unicodedata

import numpy as np

from keras_resnet.export.graph import BYTES_SIGNATURE, FLOAT_SIGNATURE, IMAGE_BYTES, IMAGES, SYSTEM_ALLOCATOR
from keras_resnet.run_dir import atomic_write_bytes

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
CANDIDATE_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MIN_THROUGHPUT_GAIN = 1.1
LATENCY_REPEATS = 5  # timed calls per batch size, after an untimed one
MAX_BATCH_TIMEOUT_S = 0.01
# The server's environment, as serving_instructions prints it and the batching latencies are
# timed: oneDNN keeps a convolution's re-laid-out kernel read from a variable between calls
# (ResNet-152: 1.6 GB to load, 1.1 without); the exporter's own allocator choice
# (cli.export_from_flags) is not the server's (None: unset). The export's check leaves the
# cache off: it computes the same numbers, and its process sits beside the exporter's.
SERVER_ENVIRONMENT = {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1", SYSTEM_ALLOCATOR: None}
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def warmup_requests(model_name, image_size, png_bytes, batch_sizes=(1,)):
    """One PredictionLog per signature and batch size, so that no first request of a size
    the server will run (each allowed batch size, with batching) pays for its set-up."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    logs = []
    for batch_size in batch_sizes:
        inputs = {
            FLOAT_SIGNATURE: (
                IMAGES,
                tf.make_tensor_proto(np.full((batch_size, *image_size, 3), 128.0, dtype="float32")),
            ),
            BYTES_SIGNATURE: (
                IMAGE_BYTES,
                tf.make_tensor_proto([png_bytes] * batch_size, dtype=tf.string, shape=[batch_size]),
            ),
        }
        for signature, (name, tensor) in inputs.items():
            spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
            request = predict_pb2.PredictRequest(model_spec=spec)
            request.inputs[name].CopyFrom(tensor)
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(saved_model_dir, model_name, image_size, batch_sizes=(1,)):
    """Write `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog) into the dir."""
    import tensorflow as tf

    gray = tf.io.encode_png(tf.fill((*image_size, 3), tf.constant(128, tf.uint8))).numpy()
    path = os.path.join(saved_model_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, image_size, gray, batch_sizes):
            writer.write(log.SerializeToString())
    return path


def read_warmup_batch_sizes(path):
    """{signature: sorted batch sizes} the warm-up file at `path` sends (read back as TF
    Serving reads it: TFRecords of PredictionLog)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    sizes = {}
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        (tensor,) = request.inputs.values()
        sizes.setdefault(request.model_spec.signature_name, set()).add(tensor.tensor_shape.dim[0].size)
    return {signature: sorted(found) for signature, found in sizes.items()}


def integer_versions(model_base):
    """The integer version dirs under `<base>/<model_name>` (what TF Serving would load)."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(n) for n in os.listdir(model_base) if n.isdigit() and os.path.isdir(os.path.join(model_base, n)))


def read_models_config(base_path):
    """The ModelServerConfig in `<base_path>/models.config`, or an empty one; a file that does
    not parse is a ValueError naming its line, so that an export refuses it before it
    writes anything."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    path = os.path.join(base_path, MODELS_CONFIG)
    if not os.path.isfile(path):
        return config
    with open(path, "rb") as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        reason = str(error).split(" : ", 1)[-1].rstrip(".")
        raise ValueError(
            f"{path!r} line {error.GetLine()} is not TF Serving's ModelServerConfig ({reason}): fix that line, or "
            "move the file away (an export keeps every entry it does not write)"
        ) from None
    return config


def version_labels(base_path):
    """{model name: {label: version}} of the current models.config, for versions that exist."""
    labels = {}
    for entry in read_models_config(base_path).model_config_list.config:
        present = set(integer_versions(os.path.join(base_path, entry.name)))
        kept = {label: version for label, version in entry.version_labels.items() if version in present}
        if kept:
            labels[entry.name] = kept
    return labels


def check_model_name(name):
    """A served model name is a directory name TF Serving and its URLs take as it is."""
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise ValueError(
            f"model_name={name!r} must be letters, digits, '_', '-' or '.' (a directory name): give one with "
            f"--model_name (model_name=), e.g. {valid_model_name(str(name))!r}"
        )
    return name


def valid_model_name(text):
    """`text` as a valid model name: accents dropped, each run of other characters an '_'
    ("uni é r" -> "uni_e_r"); "model" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_text).strip("_.-") or "model"


def check_label(label):
    """A version label TF Serving accepts in a request's model_spec: a name, not a number."""
    if not isinstance(label, str) or not label or label.isdigit() or not all(c.isalnum() or c in "_-." for c in label):
        raise ValueError(f"version label {label!r} must be letters, digits, '_', '-' or '.', and not all digits")
    return label


def merged_models_config(base_path, model_name, serving_base="/models", labels=None):
    """The base path's models.config with `model_name`'s entry added or updated, every other
    entry and field as it was (hand-written ones included).

    A new entry serves `<serving_base>/<model_name>` (the container's /models; None: the
    local absolute path) on the tensorflow platform. Version labels already there are kept
    for versions still there, `labels` ({label: version}) added or moved; a labelled model
    serves its labelled versions and its newest (a `specific` version policy), since TF
    Serving labels only versions it has loaded. Other fields of an existing entry are kept.
    """
    config = read_models_config(base_path)
    entries = config.model_config_list.config
    entry = next((entry for entry in entries if entry.name == model_name), None)
    if entry is None:
        root = os.path.abspath(base_path) if serving_base is None else serving_base.rstrip("/")
        entry = entries.add(name=model_name, base_path=f"{root}/{model_name}", model_platform="tensorflow")
    versions = integer_versions(os.path.join(base_path, model_name))
    kept = {label: version for label, version in entry.version_labels.items() if version in versions}
    merged = {**kept, **(labels or {})}
    if merged != dict(entry.version_labels):
        entry.ClearField("version_labels")
        entry.version_labels.update(merged)
    if merged:
        served = entry.model_version_policy.specific.versions
        del served[:]
        served.extend(sorted(set(merged.values()) | {max(versions)}))
    return config


def write_models_config(base_path, model_name, serving_base="/models", labels=None):
    """Write `<base_path>/models.config` with `model_name`'s entry merged in, atomically;
    returns its path."""
    from google.protobuf import text_format

    path = os.path.join(base_path, MODELS_CONFIG)
    config = merged_models_config(base_path, model_name, serving_base, labels)
    atomic_write_bytes(path, text_format.MessageToString(config).encode())
    return path


def batching_parameters_class():
    """TF Serving's `tensorflow.serving.BatchingParameters` message (session_bundle_config.proto,
    which tensorflow-serving-api does not ship), declared with its field names, numbers and types."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    wrapped = (
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
    )
    for name, number, kind in wrapped:
        message.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{kind}",
            label=field.LABEL_OPTIONAL,
        )
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def choose_batching(latencies, num_batch_threads, min_gain=MIN_THROUGHPUT_GAIN, max_timeout_s=MAX_BATCH_TIMEOUT_S):
    """BatchingParameters from measured latencies ({batch size: seconds per call}).

    allowed_batch_sizes: from 1, each measured size that serves at least `min_gain` times the
    images/s of the last one kept (a bigger batch that serves no more images only adds
    latency; one slow measurement does not end the list); max_batch_size: the last kept. batch_timeout_micros: the batch-1 latency,
    at most `max_timeout_s`, so a lone request waits at most as long as its own inference.
    num_batch_threads: the serving machine's cores (TF Serving's advice for CPUs)."""
    sizes = sorted(latencies)
    if not sizes or sizes[0] != 1 or any(latencies[size] <= 0 for size in sizes):
        raise ValueError(f"latencies {latencies!r} must start at batch 1 and be positive")
    if not isinstance(num_batch_threads, int) or num_batch_threads < 1:
        raise ValueError(f"num_batch_threads={num_batch_threads!r} must be an integer >= 1")
    allowed = [1]
    for size in sizes[1:]:
        if size / latencies[size] >= min_gain * allowed[-1] / latencies[allowed[-1]]:
            allowed.append(size)
    parameters = batching_parameters_class()()
    parameters.max_batch_size.value = allowed[-1]
    parameters.batch_timeout_micros.value = int(round(1e6 * min(latencies[1], max_timeout_s)))
    parameters.num_batch_threads.value = num_batch_threads
    parameters.allowed_batch_sizes.extend(allowed)
    return parameters


def measured_batching(graph, log=print, batch_sizes=CANDIDATE_BATCH_SIZES):
    """BatchingParameters for `graph`'s float signature from its latencies on this machine,
    measured as TF Serving runs it: the signature saved as the export saves it, loaded in a
    new process with the server's environment (SERVER_ENVIRONMENT; whose memory,
    activations of the largest batch included, goes back to the system when it ends), each
    batch size of gray images timed LATENCY_REPEATS times."""
    from keras_resnet.export import verify

    with tempfile.TemporaryDirectory() as directory:
        path = graph.save_float_signature(os.path.join(directory, FLOAT_SIGNATURE), as_served=True)
        calls = [
            (FLOAT_SIGNATURE, {IMAGES: np.full((size, *graph.image_size, 3), 128.0, dtype="float32")})
            for size in batch_sizes
        ]
        latencies = dict(zip(batch_sizes, verify.signature_seconds(path, calls, SERVER_ENVIRONMENT, LATENCY_REPEATS)))
    log(
        "batching: measured "
        + ", ".join(
            f"batch {size} {1e3 * seconds:.1f} ms ({size / seconds:.0f} images/s)"
            for size, seconds in latencies.items()
        )
    )
    return choose_batching(latencies, os.cpu_count() or 1)


def serving_batch_sizes(base_path, parameters=None):
    """The batch sizes a server of `base_path` runs, for warm-up: `parameters`' allowed sizes,
    else those of the base path's batching_parameters.txt, else batch 1 alone."""
    path = os.path.join(base_path, BATCHING_PARAMETERS)
    if parameters is None and os.path.isfile(path):
        parameters = read_batching_parameters(path)
    return tuple(parameters.allowed_batch_sizes) if parameters is not None and parameters.allowed_batch_sizes else (1,)


def batching_parameters_text(parameters):
    """The text proto TF Serving's --batching_parameters_file reads."""
    from google.protobuf import text_format

    return text_format.MessageToString(parameters)


def read_batching_parameters(path):
    """The BatchingParameters in the text file at `path`."""
    from google.protobuf import text_format

    with open(path) as f:
        return text_format.Parse(f.read(), batching_parameters_class()())


def write_batching_parameters(base_path, parameters):
    """Write `<base_path>/batching_parameters.txt` atomically; returns its path."""
    path = os.path.join(base_path, BATCHING_PARAMETERS)
    atomic_write_bytes(path, batching_parameters_text(parameters).encode())
    return path


def serving_instructions(base_path, model_name):
    """How to serve `<base_path>` with the tensorflow/serving container and query it (with
    batching when the base path has batching parameters; labels when models.config has some).
    The container gets SERVER_ENVIRONMENT: the served weights are variables only read, which
    oneDNN may then treat as constants (a no-op where oneDNN is off)."""
    volume = shlex.quote(f"{os.path.abspath(base_path)}:/models")
    environment = "".join(f"-e {name}={value} " for name, value in SERVER_ENVIRONMENT.items() if value is not None)
    options = ""
    if os.path.isfile(os.path.join(base_path, BATCHING_PARAMETERS)):
        options += f" \\\n      --enable_batching --batching_parameters_file=/models/{BATCHING_PARAMETERS}"
    if version_labels(base_path):
        options += " \\\n      --allow_version_labels_for_unavailable_models"
    return f"""Serve it with TF Serving (REST on 8501, gRPC on 8500):
  docker run --rm -p 8500:8500 -p 8501:8501 {environment}-v {volume} tensorflow/serving \\
      --model_config_file=/models/{MODELS_CONFIG}{options}
Query it over REST (the bytes signature decodes, resizes and crops on the server):
  printf '{{"signature_name": "serve_image_bytes", "instances": [{{"b64": "%s"}}]}}' "$(base64 -w0 IMAGE.png)" \\
      | curl -s -d @- http://localhost:8501/v1/models/{model_name}:predict
or with the Python client (gRPC, or --rest_url http://localhost:8501):
  python export/client.py --server localhost:8500 --model_name {model_name} IMAGE.png [IMAGE.jpg ...]"""
