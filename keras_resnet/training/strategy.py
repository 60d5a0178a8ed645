"""Choosing the tf.distribute strategy: the one loop runs unchanged under each of them."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile

from keras_resnet.training.config import STRATEGIES

TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


def parse_tf_config(text):
    """The TF_CONFIG of a multi-worker job, checked; a ValueError says what is wrong.

    MultiWorkerMirroredStrategy reads TF_CONFIG itself, but a malformed one fails deep in
    its start-up or hangs waiting for peers: check it first.
    """
    if not text:
        raise ValueError(
            f"strategy='multi_worker' reads TF_CONFIG, which is not set; e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}): {text!r}; e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if (
        not isinstance(cluster, dict)
        or not cluster
        or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()
        )
    ):
        raise ValueError(f"TF_CONFIG 'cluster' must map job names to lists of 'host:port': got {cluster!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f"TF_CONFIG 'task' type must be one of {sorted(cluster)}: got {task!r}")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG 'task' index must be in 0..{len(cluster[task['type']]) - 1}: got {index!r}")
    return spec


def _local_devices():
    """All local GPUs, or else all (logical) CPUs: what `mirrored` replicates over."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name, tpu=None):
    """The strategy called `name` (one of STRATEGIES), ready to use."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {STRATEGIES}")
    if name == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(_local_devices()[0])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_local_devices())
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tpu is None:
        raise ValueError("strategy='tpu' needs tpu= (a TPU name, grpc:// address, or 'local')")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_batch_size(batch_size, strategy):
    """The global batch must split evenly across replicas (each gets batch / replicas)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the {replicas} replicas of this strategy; "
            f"use a multiple of {replicas}, e.g. {replicas * max(1, round(batch_size / replicas))}"
        )


def is_chief(strategy):
    """Whether this process writes the run's files (the one process, or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def checkpoint_dir(directory, strategy):
    """Where this process writes checkpoints: `directory` for the chief, a scratch dir else.

    Under multi_worker every worker must take part in saving; only the chief's copy is kept
    (TensorFlow's multi-worker checkpointing pattern).
    """
    if is_chief(strategy):
        return directory
    return tempfile.mkdtemp(prefix=f"worker{strategy.cluster_resolver.task_id}-")


class WorkerLostError(RuntimeError):
    """A multi_worker peer stopped answering (killed, frozen, its host gone)."""


def _lost_task(text):
    """(job, index) of the task a TensorFlow collective error blames, or None."""
    match = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", text) or re.search(r"/job:(\w+)/task:(\d+)", text)
    return (match.group(1), int(match.group(2))) if match else None


def peer_listens(address, timeout=2.0):
    """Whether a process accepts connections at `address` ("host:port"), or None when the host
    does not answer: a killed worker's port refuses them, a frozen one's kernel still accepts.

    TensorFlow's error text alone cannot tell them apart: a killed peer is sometimes reported
    through the coordination service's missed heartbeats, as a frozen one is.
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except (OSError, ValueError):
        return None


def worker_lost(error, last_checkpoint):
    """The WorkerLostError a collective failure under multi_worker means, or None if `error`
    is something else: one line naming the lost worker (its TF_CONFIG address), how it was
    lost, the last checkpoint, and that all workers must be rerun.

    TensorFlow reports a lost peer as an UnavailableError, DeadlineExceededError or
    AbortedError from the collective the survivor was running: a killed one usually within a
    second (its connections reset), a frozen one once it misses heartbeats (about 10 s).
    Whether its process ended is asked of its port, not read from the error's wording.
    """
    import tensorflow as tf

    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)):
        return None
    text = str(error)
    task = _lost_task(text)
    address = None
    if task is None:
        who = "a worker"
    else:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        hosts = cluster.get(task[0], [])
        address = hosts[task[1]] if task[1] < len(hosts) else None
        who = f"{task[0]} {task[1]}" + (f" ({address})" if address else "")
    if address is not None and peer_listens(address) is False:
        how = "its connection closed (the process ended)"
    elif "heartbeat" in text:
        how = "it stopped sending heartbeats (frozen, or its host gone)"
    elif "reset by peer" in text or "Socket closed" in text or "Connection refused" in text:
        how = "its connection closed (the process ended)"
    else:
        how = text.strip().splitlines()[-1][:200]
    return WorkerLostError(
        f"lost {who}: {how}. The last checkpoint is {last_checkpoint}; rerun all workers (the same command on "
        "each) to resume from it"
    )
