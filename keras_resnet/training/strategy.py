"""Choosing the tf.distribute strategy: the one loop runs unchanged under each of them."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile

from keras_resnet.training.config import CLUSTER_RESOLVERS, STRATEGIES

TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# What SlurmClusterResolver reads of a Slurm step (srun sets them in every task it starts).
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
# TensorFlow's first port on each node where the step reserved none (srun --resv-ports does).
SLURM_DEFAULT_PORT = 8888


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


def cluster_source(cluster_resolver, environ):
    """Where multi_worker takes its cluster from: the one asked for, else TF_CONFIG where it is
    set, else a Slurm step's environment where SLURM_PROCID is set; a ValueError otherwise."""
    if cluster_resolver is not None and cluster_resolver not in CLUSTER_RESOLVERS:
        raise ValueError(f"cluster_resolver={cluster_resolver!r} is not one of {CLUSTER_RESOLVERS}")
    if cluster_resolver is None:
        cluster_resolver = "slurm" if "TF_CONFIG" not in environ and "SLURM_PROCID" in environ else "tf_config"
    if cluster_resolver == "tf_config":
        parse_tf_config(environ.get("TF_CONFIG"))
        return "tf_config"
    missing = [name for name in SLURM_VARIABLES if not environ.get(name)]
    if missing:
        raise ValueError(
            f"cluster_resolver='slurm' reads a Slurm step's environment, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: start each worker with srun (one task per worker), "
            "or give TF_CONFIG"
        )
    return "slurm"


def slurm_port_base(environ):
    """The step's first reserved port (SLURM_STEP_RESV_PORTS, e.g. "12000-12015"), else TensorFlow's default."""
    ports = environ.get("SLURM_STEP_RESV_PORTS")
    if not ports:
        return SLURM_DEFAULT_PORT
    first = ports.split(",")[0].split("-")[0]
    if not first.isdigit():
        raise ValueError(f"SLURM_STEP_RESV_PORTS={ports!r} is not a Slurm port range such as '12000-12015'")
    return int(first)


def slurm_cluster():
    """The cluster of this Slurm step as TensorFlow's SlurmClusterResolver lays it out (a worker
    per task, hosts sorted, ports from the first reserved one), keeping the GPUs Slurm gave
    this task: the resolver's own GPU split is not applied (it needs nvidia-smi, and srun
    --gpus-per-task has split them already), so it is given one nominal GPU per task and
    auto_set_gpu=False, and TensorFlow counts the task's real ones."""
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
    slurm = resolvers.SlurmClusterResolver(
        port_base=slurm_port_base(os.environ), gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
    )
    return resolvers.SimpleClusterResolver(
        slurm.cluster_spec(),
        task_type=slurm.task_type,
        task_id=slurm.task_id,
        num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))},
        rpc_layer="grpc",
    )


def _local_devices():
    """All local GPUs, or else all (logical) CPUs: what `mirrored` replicates over."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name, tpu=None, cluster_resolver=None):
    """The strategy called `name` (one of STRATEGIES), ready to use; multi_worker's cluster
    comes from `cluster_resolver` (see `cluster_source`)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {STRATEGIES}")
    source = cluster_source(cluster_resolver, os.environ) if name == "multi_worker" else None
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(_local_devices()[0])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_local_devices())
    if name == "multi_worker":
        resolver = slurm_cluster() if source == "slurm" else None  # None: TF_CONFIG, read by TensorFlow
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if tpu is None:
        raise ValueError("strategy='tpu' needs tpu= (a TPU name, grpc:// address, or 'local')")
    return tf.distribute.TPUStrategy(connect_tpu(tpu))


def connect_tpu(tpu):
    """The initialised TPU system at `tpu`; a ValueError of one line where there is none."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        reason = str(error).strip().splitlines()[0].split(". ")[0][:200]
        raise ValueError(
            f"strategy='tpu' found no TPU at tpu={tpu!r} ({reason}): run on a TPU VM with --tpu local, or give a "
            "Cloud TPU's name or grpc:// address; without a TPU use --strategy default, mirrored or multi_worker"
        ) from None
    return resolver


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


def cluster_notes(strategy):
    """What a multi_worker process says of itself at start: which worker it is, at which
    address, where its cluster came from, and who writes the run dir; nothing otherwise."""
    import tensorflow as tf

    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return []
    tasks = resolver.cluster_spec().as_dict()[resolver.task_type]
    source = "TF_CONFIG" if isinstance(resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver) else "Slurm"
    role = "writes the run dir" if is_chief(strategy) else "trains alongside; the chief writes the run dir"
    return [
        f"cluster from {source}: {resolver.task_type} {resolver.task_id} of {len(tasks)} "
        f"({tasks[resolver.task_id]}), {role}"
    ]


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
