"""What keras_resnet keeps of Keras' internals, through public APIs only, against those
internals: keras.applications' published file names and hashes, the legacy h5 format's
chunked name lists, get_file's hashes and cache directory. The tests may read keras.src;
the library may not."""

import inspect
import os

import h5py
import numpy as np
import pytest
from keras.src.applications import resnet as keras_resnet_source
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from keras_resnet import published, weights


def test_the_published_table_is_keras_applications_own():
    assert published.KERAS_ORIGIN == keras_resnet_source.BASE_WEIGHTS_PATH
    for depth, hashes in published.KERAS_FILE_HASHES.items():
        assert hashes == keras_resnet_source.WEIGHTS_HASHES[f"resnet{depth}"]
    source = inspect.getsource(keras_resnet_source)
    for include_top in (True, False):
        template = published.keras_file_name(50, include_top).replace("resnet50", "{weights_name}")
        assert f'f"{template}"' in source


def test_the_weights_loader_fetches_exactly_the_published_files():
    assert sorted(weights.IMAGENET_FILES) == [(d, top) for d in (50, 101, 152) for top in (False, True)]
    for (depth, include_top), entry in weights.IMAGENET_FILES.items():
        assert entry.file_hash == keras_resnet_source.WEIGHTS_HASHES[f"resnet{depth}"][0 if include_top else 1]
        assert entry.origin == keras_resnet_source.BASE_WEIGHTS_PATH + entry.fname


@pytest.mark.parametrize("count", [3, 9000])  # 9000 names pass HDF5's 64 KiB: Keras writes chunks
def test_name_lists_read_as_keras_writes_and_reads_them(count, tmp_path):
    names = [f"conv{i}_block{i % 7}_1_conv".encode() for i in range(count)]
    with h5py.File(tmp_path / "names.h5", "w") as f:
        legacy_h5_format.save_attributes_to_hdf5_group(f, "layer_names", names)
    with h5py.File(tmp_path / "names.h5", "r") as f:
        assert ("layer_names" in f.attrs) == (count == 3)
        ours = weights.h5_list_attribute(f, "layer_names")
        assert ours == legacy_h5_format.load_attributes_from_hdf5_group(f, "layer_names")
    assert ours == [name.decode() for name in names]


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_file_hash_is_get_files_hash(algorithm, tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(3 << 20))  # three 1 MiB chunks
    assert weights.file_hash(str(path), algorithm) == file_utils.hash_file(str(path), algorithm=algorithm)


def test_cache_dir_is_keras_home_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    assert weights.cache_dir() == str(tmp_path / "keras_home")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    os.makedirs(tmp_path / "user")
    assert weights.cache_dir() == str(tmp_path / "user" / ".keras")
