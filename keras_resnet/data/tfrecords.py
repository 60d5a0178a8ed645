"""TFRecord labels checked before training, on a bounded sample of each split's shards.

TensorFlow's ImageNet tooling (and the TPU / Model Garden shards) counts `image/class/label`
from 1 and writes the class's WordNet id as `image/class/synset`. Shards written by other
tools count from 0 or order the classes otherwise; read blindly, each image would train
under its neighbour's class. Where the records carry synsets, the labels are checked against
the class list the package ships (sorted WordNet ids: keras.applications' output order):
records counted from 0 throughout are read as such (and the summary says so); any other
disagreement is an error naming the records. A label outside the head is an error too,
before the first step.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np
import tensorflow as tf

# Records read per split to check labels and count classes: a few per shard, at most this many.
SAMPLE_RECORDS = 4096
# TensorFlow's ImageNet tooling counts labels from 1.
STANDARD_FIRST_LABEL = 1
SCAN_FEATURES = {
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}
LISTED = 5


@dataclasses.dataclass(frozen=True)
class LabelSample:
    """What the first records of each shard of a split say: (file, number in file) of each
    record, its label as written and its synset ("" where the record has none)."""

    origins: tuple
    labels: np.ndarray
    synsets: tuple

    def where(self, mask):
        """'file record n: label L synset S' for the first records of `mask`."""
        picked = np.flatnonzero(mask)[:LISTED]
        text = [
            f"{self.origins[i][0]} record {self.origins[i][1]}: label {self.labels[i]}"
            + (f" synset {self.synsets[i]}" if self.synsets[i] else "")
            for i in picked
        ]
        more = f" (and {int(np.sum(mask)) - len(picked)} more)" if np.sum(mask) > len(picked) else ""
        return "; ".join(text) + more


def _read_first(path, count):
    """(number, label, synset) of a shard's first `count` parseable records; a shard cut
    short is read up to the break (the pipeline skips the rest the same way)."""
    found = []
    records = tf.data.TFRecordDataset(path).take(count).enumerate()
    iterator = iter(records.map(lambda n, record: (n, tf.io.parse_single_example(record, SCAN_FEATURES))))
    while True:
        try:
            number, features = next(iterator)
        except StopIteration:
            break
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            break
        found.append((int(number), int(features["image/class/label"]), features["image/class/synset"].numpy().decode()))
    return found


@functools.cache
def label_sample(files, limit=SAMPLE_RECORDS):
    """LabelSample of the first records of every shard (`files`, a tuple), `limit` in all."""
    per_file = max(1, limit // max(1, len(files)))
    origins, labels, synsets = [], [], []
    for path in files[:limit]:
        for number, label, synset in _read_first(path, per_file):
            origins.append((path, number))
            labels.append(label)
            synsets.append(synset)
    return LabelSample(tuple(origins), np.asarray(labels, np.int64), tuple(synsets))


def first_label(sample, class_ids):
    """The label the records give class 0: 1 (TensorFlow's tooling), or 0 where every
    sampled synset says the records count from 0. A ValueError where synsets and labels
    disagree otherwise, naming the records."""
    if not any(sample.synsets):
        return STANDARD_FIRST_LABEL
    index = {wnid: i for i, wnid in enumerate(class_ids)}
    unknown = np.array([s not in index for s in sample.synsets])
    if unknown.any():
        raise ValueError(
            f"image/class/synset of {sample.where(unknown)} is not one of the {len(class_ids)} ImageNet "
            "WordNet ids; these records are not ImageNet-1k as its tooling writes it"
        )
    offsets = sample.labels - np.array([index[s] for s in sample.synsets])
    if (offsets == STANDARD_FIRST_LABEL).all():
        return STANDARD_FIRST_LABEL
    if (offsets == 0).all():
        return 0
    common = collections.Counter(offsets.tolist()).most_common(1)[0][0]
    raise ValueError(
        f"image/class/label disagrees with image/class/synset: {sample.where(offsets != common)}; "
        f"most records give label = (sorted WordNet index) + {common}. The labels must follow the synsets "
        f"(class 0 = {class_ids[0]}) counted from 1 or 0 throughout: rewrite these records"
    )


def check_labels(sample, first, classes):
    """A ValueError naming the records whose label lies outside the `classes` the records
    and the head hold (first..first+classes-1), before training."""
    bad = (sample.labels < first) | (sample.labels >= first + classes)
    if bad.any():
        hint = (
            " (labels count from 1, as TensorFlow's ImageNet tooling writes them; records counted from 0 "
            "are read as such where they carry image/class/synset)"
            if first == STANDARD_FIRST_LABEL and (sample.labels == 0).any()
            else ""
        )
        raise ValueError(
            f"image/class/label outside {first}..{first + classes - 1} ({classes} classes): {sample.where(bad)}{hint}"
        )


def class_counts(sample, first, classes):
    """Records per class (0-based) in the sample."""
    return np.bincount(np.clip(sample.labels - first, 0, classes - 1), minlength=classes)
