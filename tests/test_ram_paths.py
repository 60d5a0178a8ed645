"""Every path through tf.io.gfile: a run whose data, run dir and export targets are all
`ram://` (TensorFlow's in-memory file system, reached by the same code as `gs://`) trains,
resumes, evaluates and exports, and the exports load back from `ram://`. `ram://` lives in
one process, so the whole journey is one test; no local folder named `ram:` may appear.
"""

import os

import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from data_writers import encode

import keras_resnet
from keras_resnet import evaluation, run_dir
from keras_resnet.data.arrays import digits_arrays
from keras_resnet.export import onnx, saved_model, sources
from keras_resnet.training import loop
from keras_resnet.training.config import recipe
from keras_resnet.training.reporting import read_metrics

NAMES = ("one", "two", "zero")


def write_ram_folders(root, per_class=6):
    """root/{train,validation}/<name>/*: digit i under the i-th name, PNG and JPEG, written
    with tf.io.gfile."""
    images, labels = digits_arrays("train")
    for split, offset in (("train", 0), ("validation", per_class)):
        for label, name in enumerate(NAMES):
            tf.io.gfile.makedirs(f"{root}/{split}/{name}")
            for i, image in enumerate(images[labels == label][offset : offset + per_class]):
                fmt, suffix = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
                with tf.io.gfile.GFile(f"{root}/{split}/{name}/{i:02d}.{suffix}", "wb") as f:
                    f.write(encode(image, fmt))
    return root


def config(data_dir, model_dir, train_steps):
    return recipe(
        "cifar",
        data_dir=data_dir,
        model="resnet20",
        model_dir=model_dir,
        image_size=16,
        batch_size=6,
        train_steps=train_steps,
        seed=0,
        log_interval=2,
        eval_interval=0,
        checkpoint_interval=2,
        keep_checkpoints=3,
    )


@pytest.mark.slow
def test_a_run_entirely_under_ram_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_ram_folders("ram://journey/digits")
    model_dir = "ram://journey/run"

    loop.train(config(data_dir, model_dir, 2))
    loop.train(config(data_dir, model_dir, 4))  # resumes from ckpt-2
    prefixes = run_dir.checkpoint_prefixes(run_dir.checkpoint_dir(model_dir))
    assert f"{model_dir}/checkpoints/ckpt-4" in prefixes, prefixes
    assert [r["step"] for r in read_metrics(model_dir) if r["split"] == "train"] == [2, 4]  # both runs, one file

    classifier = evaluation.load_classifier(model_dir)
    result = evaluation.evaluate(classifier, "base", "validation", data_dir=data_dir, batch_size=6)
    assert result["count"] == 18
    evaluation.save_confusion_png(result["confusion"], f"{model_dir}/confusion_validation_center.png", NAMES)
    for name in ("metrics.jsonl", "curves.png", "confusion_validation_center.png", "config.json"):
        assert tf.io.gfile.exists(f"{model_dir}/{name}"), name

    source = sources.from_run_dir(model_dir)
    exported = saved_model.export_saved_model(source, "ram://journey/serving", model_name="digits")
    assert exported.path == "ram://journey/serving/digits/1"
    assert tf.io.gfile.exists("ram://journey/serving/models.config")
    onnx_path = onnx.export_onnx(source, "ram://journey/onnx/digits.onnx").path
    assert onnx_path == "ram://journey/onnx/digits.onnx"

    loaded = keras_resnet.load(model_dir)  # the newest checkpoint, read from ram://
    images = tf.image.resize(digits_arrays("test")[0][:4].astype("float32"), (16, 16)).numpy()
    expected = loaded.model.predict(loaded.preprocess(images), verbose=0)
    served = tf.saved_model.load(exported.path)
    outputs = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    logits = outputs["logits"].numpy()
    with tf.io.gfile.GFile(onnx_path, "rb") as f:
        session = onnxruntime.InferenceSession(f.read(), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_probabilities = session.run(["logits", "probabilities"], {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(onnx_probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(onnx_logits, logits, rtol=1e-4, atol=1e-3)

    keras_resnet.weights.save(loaded.model, tmp_path / "digits.weights.h5")
    tf.io.gfile.copy(str(tmp_path / "digits.weights.h5"), "ram://journey/digits.weights.h5")
    from_file = keras_resnet.load("ram://journey/digits.weights.h5")
    np.testing.assert_array_equal(from_file.model.predict(loaded.preprocess(images), verbose=0), expected)

    for root in (tmp_path, os.getcwd()):
        found = [d for d, dirs, _ in os.walk(root) for d in dirs if d == "ram:"]
        assert not found, found
