"""What the export tests share: trained-statistics nets, the Keras model's own answers on
the same images, and directories the file system refuses to write (read-only, full)."""

import contextlib
import os
import resource
import signal
import subprocess

import numpy as np

import keras_resnet
from keras_resnet.export import sources, verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics


def trained_source(name, mode="tf", seed=0):
    """A registered net with a trained net's BN statistics, from photos of its input size."""
    model = keras_resnet.get_builder(name)()
    size = model.input_shape[1]
    with_trained_statistics(model, preprocess_input(sample_photos(size, 16, seed), mode), seed)
    return sources.ModelSource(model, mode, name=name)


def keras_outputs(source, images):
    """(logits in float64, softmax probabilities) of the Keras model on RGB 0..255 images."""
    x = preprocess_input(np.asarray(images, dtype="float32"), source.preprocess_mode, source.mean)
    return verify.keras_reference(source, images)[0], np.asarray(source.model(x, training=False))


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    """A tmpfs mounted at `path` (created) with mount `options` while the block runs."""
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)
        os.rmdir(path)


@contextlib.contextmanager
def read_only_dir(path):
    """An empty directory at `path` under which nobody can write: mode 555, or for root, whom
    modes do not stop, a read-only tmpfs."""
    if os.geteuid() == 0:
        with mounted_tmpfs(path, "ro,size=64k") as directory:
            yield directory
        return
    os.makedirs(path, mode=0o555)
    try:
        yield path
    finally:
        os.chmod(path, 0o755)


def limit_file_size(size):
    """A subprocess preexec_fn: files of the process grow to `size` bytes at most (a write
    past it fails with EFBIG, as a full disk fails with ENOSPC)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@contextlib.contextmanager
def small_disk(path, size):
    """(directory, preexec_fn) where `size` bytes fill the disk: a tmpfs of that size for root,
    else the directory with each file of the exporting process held to that size."""
    if os.geteuid() == 0:
        with mounted_tmpfs(path, f"size={size}") as directory:
            yield directory, None
        return
    os.makedirs(path)
    yield path, limit_file_size(size)
