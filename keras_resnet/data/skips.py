"""Skipping bad records without losing the rest: count, log, go on.

A tf.data error (a JPEG that does not decode, a record that does not parse, a shard cut
short) would end the whole input pipeline; `Dataset.ignore_errors` drops the element but
says nothing of how many. Two exact counts replace it:

- per element: elements are numbered, the fallible work (parse, decode, crop) runs in a
  parallel map that keeps their order, then `ignore_errors` and batching; the numbers
  missing from a batch are the failures, exact at once. A finite stream ends with a
  marker element so a failure at the very end counts too. Each number's origin (file)
  waits in a hash table until its batch comes out, and is printed if it is missing.
- per shard: a TFRecord reader that hits a truncated or corrupt record cannot find the
  next one, so it stops that shard; the bytes of the records it did read are summed and,
  at the end of the shard, compared with the file's size: a shortfall sends on one empty
  record, which fails to parse and so counts 1 above.
"""

from __future__ import annotations

import concurrent.futures
import sys

import tensorflow as tf

# A TFRecord frames each record with an 8-byte length, two 4-byte CRCs.
RECORD_OVERHEAD = 16


def _plain_cpu_variable():
    with tf.device("/cpu:0"):
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_records")


class SkipCounter:
    """Records an input pipeline skipped, readable at any time (e.g. each epoch's end).

    One int64 variable on the CPU, made on a thread of its own: a distribution strategy's
    scope is per thread, so even inside one it is a plain variable a dataset can update.
    """

    def __init__(self):
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            self._count = thread.submit(_plain_cpu_variable).result()

    @property
    def count(self) -> int:
        """Records skipped since creation or the last reset()."""
        return int(self._count.numpy())

    def reset(self) -> int:
        """Return the count and start again from 0."""
        value = self.count
        self._count.assign_sub(value)
        return value

    def add(self, n, *message):
        """Graph op: where n > 0, print the message to stderr and count n."""

        def count():
            printed = tf.print("keras_resnet.data:", *message, output_stream=sys.stderr)
            with tf.control_dependencies([printed]):
                return self._count.assign_add(tf.cast(n, tf.int64), read_value=False)

        return tf.cond(n > 0, count, tf.no_op)


def zeros_like_spec(spec):
    """A zero tensor matching a TensorSpec; unknown dimensions become 0."""
    shape = [0 if d is None else d for d in spec.shape.as_list()]
    return tf.zeros(shape, spec.dtype)


def _origin(element):
    """Where an element came from: its last string, in tf.nest order."""
    return tf.nest.flatten(element)[-1]


def batch_skipping_errors(dataset, fn, counter, batch_size, drop_remainder, check=None):
    """dataset.map(fn).batch(batch_size), in order, where an element whose fn raises is
    dropped and counted.

    fn(index, *element) also gets the element's number in the stream (a seed, say). The
    last string in each element names its origin (a file), printed with a skip.
    `check(*batch) -> batch` runs where errors are not skipped: a check that must stop
    the pipeline (labels out of range).
    """
    with tf.init_scope(), tf.device("/cpu:0"):
        origins = tf.lookup.experimental.MutableHashTable(tf.int64, tf.string, default_value="")
    finite = int(dataset.cardinality()) != tf.data.INFINITE_CARDINALITY
    if finite:
        # A last element of zeros, origin "": a failure just before it is still a gap.
        out_spec = dataset.enumerate().map(lambda index, element: fn(index, *element)).element_spec
        marker = tf.nest.map_structure(zeros_like_spec, dataset.element_spec)
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(marker))

    def work(index, element):
        origin = _origin(element)
        with tf.control_dependencies([origins.insert(index, origin)]):
            element = tf.nest.map_structure(tf.identity, element)
        if not finite:
            return index, fn(index, *element), False
        is_end = tf.equal(origin, "")
        zeros = lambda: tf.nest.map_structure(zeros_like_spec, out_spec)  # noqa: E731
        return index, tf.cond(is_end, zeros, lambda: fn(index, *element)), is_end

    def count(last, batch):
        index, output, is_end = batch
        span = tf.range(last + 1, index[-1] + 1)
        missing = tf.sets.difference(span[None], index[None]).values
        n = tf.size(missing)
        message = ("skipped", n, "unreadable record(s) (no parse, no decode or a shard cut short) of")
        done = counter.add(n, *message, origins.lookup(missing))
        with tf.control_dependencies([done, origins.remove(span)]):
            output = tf.nest.map_structure(tf.identity, output)
        if finite:
            output = tf.nest.map_structure(lambda t: tf.boolean_mask(t, tf.logical_not(is_end)), output)
        return index[-1], output if check is None else check(*output)

    batches = (
        dataset.enumerate()
        .map(work, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors(log_warning=True)
        .batch(batch_size, drop_remainder=drop_remainder)
        .scan(tf.constant(-1, tf.int64), count)
    )
    return batches.filter(lambda *batch: tf.size(tf.nest.flatten(batch)[-1]) > 0) if finite else batches


def shard_records(path, size):
    """(record, -1, complete, path) of one TFRecord file (the label is in the record).

    A shard whose records do not add up to its size (a truncated or corrupt tail) ends
    with one empty record: it fails to parse downstream and is counted there, once.
    """
    size = tf.cast(size, tf.int64)
    records = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True)
    records = records.concatenate(tf.data.Dataset.from_tensors(tf.constant(b"")))

    def tally(consumed, record):
        consumed += tf.cast(tf.strings.length(record), tf.int64) + RECORD_OVERHEAD
        return consumed, (record, tf.constant(-1), tf.equal(consumed, size + RECORD_OVERHEAD), path)

    def keep(record, hint, complete, origin):
        return tf.logical_not(tf.equal(record, b"") & complete)

    return records.scan(tf.constant(0, tf.int64), tally).filter(keep)
