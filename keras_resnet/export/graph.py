"""The serving graph shared by the SavedModel and the ONNX export.

float RGB images in 0..255 -> the run's preprocessing -> the folded float32 net (folding.py:
BN in the convs, the preprocessing's channel order and scale in the first conv, so only its
offset is added in front) -> logits, softmax probabilities, top-k classes and scores (and
class names when known). The SavedModel reads the weights from variables, as TF Serving loads
them in least memory; converters (LiteRT, OpenVINO, tf2onnx) read them as constants.
The bytes entry point first takes each image's centre view inside the graph, with the very
function the evaluation pipeline uses (keras_resnet.data.views.center_view), so a served
image gets the pixels the evaluated model saw. The SavedModel's entry points refuse a bad
request (wrong shape, empty batch, NaN or Inf, an image over MAX_PIXELS by its header)
with an InvalidArgumentError that names it: an error status in TF Serving, never a crash.
"""

from __future__ import annotations

import gc

import numpy as np
import tensorflow as tf

from keras_resnet.export.folding import input_conv, input_offset, serving_model
from keras_resnet.export.stages import mark
from keras_resnet.preprocessing import channel_affine, preprocess_input

IMAGES = "images"
IMAGE_BYTES = "image_bytes"
FLOAT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
CLASS_NAMES = "class_names"
# The float signature's outputs, in the order every format lists them.
NUMERIC_OUTPUTS = ("logits", "probabilities", "top_k_classes", "top_k_scores")
# serve_image_bytes' pixel limit, checked in the image header before decoding: 50 megapixels
# (an 8660 x 5773 photo) decode to 150 MB of RGB; a 316 KB PNG can claim 10000 x 10000.
MAX_PIXELS = 50_000_000


def default_top_k(classes):
    """5 (the paper's top-5), or every class of a net with fewer."""
    return min(5, classes)


def default_crop_fraction(image_size):
    """1.0 for CIFAR-sized nets (tested on the whole 32x32 image, section 4.2), else 0.875
    (shorter side to 256, centre 224 crop: the standard single-crop view)."""
    return 1.0 if max(image_size) <= 64 else 0.875


def centre_view_resize(image_size, crop_fraction):
    """The shorter side the centre view resizes to: `image_size` / `crop_fraction`, rounded
    (256 for 224 at 0.875, as the data pipeline's evaluation view)."""
    return int(round(image_size[0] / crop_fraction))


def _header_bytes(data, start, count):
    """`count` bytes of `data` from `start` as int64 (zeros past its end: no out-of-range error)."""
    padded = tf.strings.join([data, tf.constant(b"\0" * (start + count))])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, start, count), tf.uint8), tf.int64)


def _number(digits):
    """Unsigned integer of int64 bytes, most significant first."""
    powers = tf.reverse(tf.range(tf.size(digits, out_type=tf.int64)), [0])
    return tf.reduce_sum(digits * tf.pow(tf.constant(256, tf.int64), powers))


def encoded_shape(data):
    """(height, width) int64 an encoded JPEG/PNG/GIF/BMP will decode to, read from its header
    only (JPEG: tf.image.extract_jpeg_shape; PNG: IHDR; GIF: screen descriptor; BMP: DIB
    header); (-1, -1) for other bytes."""

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data, output_type=tf.int32)
        return tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)

    def png():
        header = _header_bytes(data, 16, 8)
        return _number(header[4:8]), _number(header[0:4])

    def gif():
        header = _header_bytes(data, 6, 4)
        return _number(header[3:1:-1]), _number(header[1::-1])

    def bmp():
        header = _header_bytes(data, 18, 8)
        height = _number(header[7:3:-1])
        return tf.abs(tf.where(height >= 2**31, height - 2**32, height)), _number(header[3::-1])

    def unknown():
        return tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)

    magic = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 8)]), 0, 8)
    return tf.case(
        [
            (tf.io.is_jpeg(data), jpeg),
            (tf.equal(magic, b"\x89PNG\r\n\x1a\n"), png),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
        ],
        default=unknown,
        exclusive=False,
    )


def _checked(value, condition, message):
    """`value` once `condition` holds, else an InvalidArgumentError carrying `message` (a
    list of strings and tensors): a bad request is an error status, never a crash."""
    assertion = tf.debugging.Assert(condition, message, summarize=8)
    with tf.control_dependencies([assertion]):
        return tf.identity(value)


def _shape_is(tensor, expected):
    """Whether `tensor` has exactly the shape `expected` (None: any size >= 1), tested at run
    time: Rank and the padded Shape are not folded away by the declared input shape."""
    rank = len(expected)
    shape = tf.concat([tf.shape(tensor), tf.zeros([rank], tf.int32)], 0)[:rank]
    sizes = [shape[i] >= 1 if size is None else tf.equal(shape[i], size) for i, size in enumerate(expected)]
    return tf.logical_and(tf.equal(tf.raw_ops.Rank(input=tensor), rank), tf.reduce_all(tf.stack(sizes)))


def check_images(images, image_size):
    """`images` once they are a non-empty float batch [n, H, W, 3] of finite values.

    Finiteness is an element-wise test and a reduction, which TensorFlow splits over its
    threads; `check_numerics` runs on one, serially before the net (BENCHMARKS.md).
    """
    height, width = image_size
    images = _checked(
        images,
        _shape_is(images, (None, height, width, 3)),
        [f"images must be float32 [batch >= 1, {height}, {width}, 3], RGB in 0..255; got shape", tf.shape(images)],
    )
    return _checked(
        images,
        tf.reduce_all(tf.math.is_finite(images)),
        ["images hold NaN or Inf: pixels must be finite RGB values in 0..255"],
    )


def check_image_bytes(image_bytes):
    """`image_bytes` once they are a non-empty batch [n] of strings."""
    return _checked(
        image_bytes,
        _shape_is(image_bytes, (None,)),
        ["image_bytes must be a batch [n >= 1] of encoded JPEG/PNG images; got shape", tf.shape(image_bytes)],
    )


def decode_centre_view(data, image_size, resize, max_pixels):
    """One encoded JPEG/PNG/GIF/BMP -> float32 RGB [H, W, 3] in 0..255: the data pipeline's
    evaluation centre view (views.center_view), once its header says it has at most
    `max_pixels` pixels. Other bytes raise InvalidArgumentError."""
    from keras_resnet.data import views

    height, width = encoded_shape(data)
    data = _checked(data, height >= 0, ["image_bytes holds a string that is not a JPEG, PNG, GIF or BMP image"])
    data = _checked(
        data,
        height * width <= max_pixels,
        ["an image of", height, "x", width, f"pixels is over the limit of serve_image_bytes, {max_pixels} pixels"],
    )
    return tf.ensure_shape(views.center_view(data, image_size[0], resize), (*image_size, 3))


def weight_values(model):
    """[trainable, non-trainable] weights of `model` as NumPy arrays, in `stateless_call`'s
    order (read eagerly: a graph being built cannot read a variable's value)."""
    return [[np.asarray(v) for v in model.trainable_variables], [np.asarray(v) for v in model.non_trainable_variables]]


def constant_inference(model, values):
    """`model`'s inference in the graph being built, its weights `values` (weight_values)
    constants of that graph, each copied in once (Keras' `stateless_call`)."""
    trainable, non_trainable = ([tf.constant(value) for value in group] for group in values)
    return lambda x: model.stateless_call(trainable, non_trainable, x, training=False)[0]


def variable_inference(model, values):
    """(`model`'s inference in the graph being built, reading its weights from resource
    variables, and the feed that initializes them): the initial values are fed to
    placeholders, not stored, so the graph holds no copy of `values` (weight_values)."""
    feed, groups = {}, []
    for group in values:
        variables = []
        for value in group:
            initial = tf.compat.v1.placeholder(value.dtype, value.shape)
            feed[initial] = value
            variables.append(tf.Variable(initial, trainable=False))
        groups.append(variables)
    trainable, non_trainable = groups

    def inference(x):
        read = lambda group: [variable.read_value() for variable in group]  # noqa: E731
        return model.stateless_call(read(trainable), read(non_trainable), x, training=False)[0]

    return inference, feed


def predict_signature(inputs, outputs):
    """The SignatureDef TF Serving's Predict API runs: {name: tensor} in and out of a graph."""
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor):
        return meta_graph_pb2.TensorInfo(
            name=tensor.name, dtype=tensor.dtype.as_datatype_enum, tensor_shape=tensor.shape.as_proto()
        )

    return meta_graph_pb2.SignatureDef(
        inputs={name: info(tensor) for name, tensor in inputs.items()},
        outputs={name: info(tensor) for name, tensor in outputs.items()},
        method_name="tensorflow/serving/predict",
    )


def save_serving_graph(model, directory, signatures, *, frozen):
    """Save a SavedModel at `directory` as TF Serving loads it: one TensorFlow graph over
    `model`'s weights, with a signature def per `signatures` item ({name: build(inference) ->
    (inputs, outputs)}, each a {name: tensor}, `inference` the model as a callable in that
    graph). Saving traced functions instead copies every weight about a dozen times on its way
    to disk (BENCHMARKS.md, "Export cost").

    `frozen`: the weights are constants of the graph, what converters read (LiteRT, OpenVINO).
    Else variables restored from the SavedModel's checkpoint, what TF Serving should load: a
    session copies a constant into every signature's executor (ResNet-152's two signatures
    load in 4.7 GB as constants, 1.1 GB as variables, 1.6 with oneDNN's kernel cache on;
    BENCHMARKS.md, "Export cost")."""
    values = weight_values(model)
    serving = tf.Graph()
    with serving.as_default():
        inference, feed = (constant_inference(model, values), {}) if frozen else variable_inference(model, values)
        values.clear()  # the graph's constants, or the feed until the variables are set, hold them
        definitions = {name: predict_signature(*build(inference)) for name, build in signatures.items()}
        builder = tf.compat.v1.saved_model.Builder(directory)
        with tf.compat.v1.Session(graph=serving) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed)
            feed.clear()  # the session's variables hold the only copy
            builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING], signature_def_map=definitions)
        builder.save()


def frozen_inference(model, image_size):
    """`model`'s inference as one TensorFlow function whose weights are constants, what
    tf2onnx converts. Traced with the weights as constants from the start: freezing a traced
    function's variables afterwards copies them about ten times.
    """
    values = weight_values(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.float32)])
    def inference(x):
        return constant_inference(model, values)(x)

    frozen = inference.get_concrete_function()
    values.clear()  # the graph holds the only copy
    return lambda x: frozen(tf.convert_to_tensor(x, tf.float32))


# Set in an exporter's environment (cli.export_from_flags): oneDNN's own allocator pools freed
# tensors for the process's life, so memory an export frees would never go back to the system.
SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def return_free_memory():
    """Hand the heap's free pages back to the system (glibc's malloc_trim): TensorFlow frees a
    tensor into the allocating thread's arena, where it stays counted in the process's memory.
    Nothing to do where the C library has no malloc_trim (macOS, musl)."""
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own symbols, libc's among them
    if trim is not None:
        trim(0)


class ServingGraph:
    """The two entry points over one folded model.
    `merge_pools=False` keeps each max pool's zero padding as its own op (LiteRT lacks the merged form)."""

    def __init__(self, source, *, top_k=None, crop_fraction=None, max_pixels=MAX_PIXELS, merge_pools=True):
        classes = source.model.output_shape[-1]
        top_k = default_top_k(classes) if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= classes:
            raise ValueError(f"top_k={top_k!r} must be an integer in 1..{classes} (the model's classes)")
        recorded_resize = source.record.eval_resize if source.record is not None else None
        if crop_fraction is None and recorded_resize:  # the record's centre view: what evaluation saw
            crop_fraction = source.image_size[0] / recorded_resize
        crop_fraction = default_crop_fraction(source.image_size) if crop_fraction is None else crop_fraction
        if isinstance(crop_fraction, bool) or not isinstance(crop_fraction, (int, float)) or not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction={crop_fraction!r} must be in (0, 1]")
        if source.image_size[0] != source.image_size[1]:
            raise ValueError(
                f"input size {source.image_size} is not square: the centre view is square, build the net with "
                "input_shape=(S, S, 3) to export it"
            )
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < source.image_size[0] ** 2:
            raise ValueError(
                f"max_pixels={max_pixels!r} must be an integer >= {source.image_size[0] ** 2} (the net's input)"
            )
        mark("build")
        order, scale, shift = channel_affine(source.preprocess_mode, source.mean)
        foldable = input_conv(source.model) is not None
        affine = (order, scale) if foldable else None
        self._folded = serving_model(source.model, logits=True, input_affine=affine, merge_pools=merge_pools)
        mark("fold")
        self._frozen = None
        # A whole image, not 3 values: onnxruntime broadcasts a 3-vector over NHWC images
        # about 5x slower than an image over the batch.
        offset = np.broadcast_to(input_offset(order, scale, shift), (*source.image_size, 3)).copy()
        self.input_offset = offset if foldable else None
        self.source = source
        self.top_k = top_k
        self.crop_fraction = crop_fraction
        self.resize = centre_view_resize(source.image_size, crop_fraction)
        self.max_pixels = max_pixels
        self.image_size = source.image_size
        self.class_names = source.class_names

    @property
    def folded(self):
        """The folded Keras net the files are written from."""
        if self._folded is None:
            raise RuntimeError("the folded net was released once the export's files were written")
        return self._folded

    def release(self):
        """Drop the folded net and its frozen trace once every file is written (the checks read
        the files and the source's network) and give their memory back to the system before a
        check's process starts beside this one."""
        self._folded = self._frozen = None
        gc.collect()
        return_free_memory()

    def frozen_logits(self):
        """The folded net's inference with its weights frozen into constants, traced on the
        first call (the direct ONNX writer never needs it). Called before an entry point is
        traced: frozen inside a trace, the folded model's variables would count as the trace's
        and be saved beside the constants."""
        if self._frozen is None:
            self._frozen = frozen_inference(self.folded, self.image_size)
            mark("freeze")
        return self._frozen

    def numeric_function(self):
        """`numeric_outputs` as a tf.function over `images_spec()`, its weights frozen first."""
        self.frozen_logits()
        # one argument named as the input: converters (OpenVINO) name the inputs after it
        return tf.function(lambda images: self.numeric_outputs(images), input_signature=[self.images_spec()])

    def images_spec(self):
        """The float signature's input: any batch of RGB images of the net's size."""
        return tf.TensorSpec([None, *self.image_size, 3], tf.float32, name=IMAGES)

    def bytes_spec(self):
        """The bytes signature's input: any batch of encoded images, each of any size."""
        return tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)

    def numeric_outputs(self, images, inference=None):
        """float RGB [batch, H, W, 3] in 0..255 -> logits, probabilities, top-k (the ONNX graph);
        `inference`: the folded net as a callable (constant_inference), else frozen_logits()."""
        if self.input_offset is None:
            x = preprocess_input(images, self.source.preprocess_mode, self.source.mean)
        else:
            x = images + tf.constant(self.input_offset)
        logits = (inference or self.frozen_logits())(x)
        probabilities = tf.nn.softmax(logits)
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        return dict(zip(NUMERIC_OUTPUTS, (logits, probabilities, classes, scores)))

    def serve_images(self, images, inference=None):
        """float RGB [batch, H, W, 3] in 0..255 -> the named outputs, with class names if known;
        a wrong shape, an empty batch or a NaN/Inf pixel is an InvalidArgumentError."""
        outputs = self.numeric_outputs(check_images(images, self.image_size), inference)
        if self.class_names is not None:
            outputs[CLASS_NAMES] = tf.gather(tf.constant(self.class_names), outputs["top_k_classes"])
        return outputs

    def float_entry(self, inference, checked=True):
        """(inputs, outputs) of the float signature in the graph being built: a placeholder for
        `images` and `serve_images` over it (`checked=False`: `numeric_outputs`, no asserts)."""
        images = tf.compat.v1.placeholder(tf.float32, [None, *self.image_size, 3], name=IMAGES)
        outputs = self.serve_images(images, inference) if checked else self.numeric_outputs(images, inference)
        return {IMAGES: images}, outputs

    def save_float_signature(self, directory, as_served=False):
        """A SavedModel at `directory` of the float signature alone: its weights constants and
        no asserts (TFLite and OpenVINO have no Assert op), what the LiteRT and OpenVINO
        converters read, naming their input and outputs after it (read from a traced function,
        they held several more copies of the weights: BENCHMARKS.md, "Export cost");
        `as_served=True`: as the SavedModel export writes it (variables, asserts), to time it."""
        save_serving_graph(
            self.folded,
            directory,
            {FLOAT_SIGNATURE: lambda inference: self.float_entry(inference, checked=as_served)},
            frozen=not as_served,
        )
        return directory

    def bytes_entry(self, inference):
        """(inputs, outputs) of the bytes signature in the graph being built."""
        image_bytes = tf.compat.v1.placeholder(tf.string, [None], name=IMAGE_BYTES)
        return {IMAGE_BYTES: image_bytes}, self.serve_image_bytes(image_bytes, inference)

    def serve_image_bytes(self, image_bytes, inference=None):
        """Encoded images [batch] (what REST's {"b64": ...} carries) -> the named outputs."""
        images = tf.map_fn(
            lambda data: decode_centre_view(data, self.image_size, self.resize, self.max_pixels),
            check_image_bytes(image_bytes),
            fn_output_signature=tf.TensorSpec((*self.image_size, 3), tf.float32),
        )
        return self.serve_images(images, inference)
