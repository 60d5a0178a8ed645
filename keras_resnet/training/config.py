"""The configuration of a training run: one dataclass, the paper's recipes as its defaults.

Every field is a command-line flag of `train/cifar10.py` and `train/imagenet.py` (the help
text lives here, in the field's metadata), and the resolved configuration is saved beside
the checkpoints it produced (`keras_resnet.run_dir`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from keras_resnet.preprocessing import MODES

FAMILIES = ("cifar", "imagenet")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
CLUSTER_RESOLVERS = ("tf_config", "slurm")
DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("steps", "plateau", "cosine", "constant")
LR_SCALINGS = ("none", "linear")


def _field(default, help, choices=None):
    """A dataclass field carrying its flag's help text and allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the CIFAR-10 recipe of section 4.2; `recipe("imagenet")`
    gives section 3.4's."""

    # What to train on what.
    model: str = _field(
        "resnet20", "Registered architecture, e.g. resnet20, resnet110, plain56, resnet50 (keras_resnet.list_models())."
    )
    dataset: str | None = _field(
        None,
        "Data set: digits (bundled, offline), cifar10, cifar100, imagenet, a TFDS name, or the name of your own "
        "class folders in --data_dir; None: what --data_dir holds (class folders are named after their directory, "
        "ImageNet TFRecords or TFDS imagenet, CIFAR files), without --data_dir cifar10 for CIFAR nets, imagenet for "
        "ImageNet nets.",
    )
    data_dir: str | None = _field(
        None,
        "Where the data set lives: class folders DIR/train/<class>/<image> (and DIR/validation/<class>/... or "
        "--val_split), ImageNet TFRecord shards DIR/train-00000-of-01024, a TFDS data dir, or CIFAR's python "
        "tarball; None: the data layer's default (TFDS).",
    )
    model_dir: str = _field(
        "runs/resnet20",
        "Run directory: config.json, checkpoints/, metrics.jsonl, TensorBoard logs, curves.png. Training "
        "resumes from its latest checkpoint.",
    )
    shortcut: str | None = _field(
        None,
        "Shortcut option of section 3.3 (A, B or C); None: the paper's choice (A for CIFAR nets, B for "
        "ImageNet nets). Plain nets have none.",
    )
    stride_in: str | None = _field(
        None,
        "Where a bottleneck's stride sits: 1x1 (the paper's models) or 3x3 (ResNet v1.5, torchvision); None: "
        "1x1, or what --init_weights were made with.",
        (None, "1x1", "3x3"),
    )
    classes: int | None = _field(
        None,
        "Classes of the head; None: the data set's class count. With --init_weights a new head of this size is made.",
    )
    sync_bn: bool = _field(
        False,
        "Batch statistics over the global batch (synchronised across replicas) instead of per replica as in the paper.",
    )
    # The optimisation recipe (section 4.2 CIFAR-10, section 3.4 ImageNet).
    batch_size: int = _field(
        128, "Global mini-batch size, split across all replicas (128 for CIFAR-10, 256 for ImageNet in the paper)."
    )
    train_steps: int = _field(64000, "Training iterations (64k for CIFAR-10, 60e4 for ImageNet in the paper).")
    train_epochs: float | None = _field(
        None, "If set, train this many epochs of the training split instead of --train_steps."
    )
    learning_rate: float = _field(0.1, "Initial learning rate (0.1 in the paper), before --lr_scaling.")
    momentum: float = _field(0.9, "SGD momentum.")
    weight_decay: float = _field(
        1e-4,
        "L2 weight decay added to the loss (coupled, as in the paper's Caffe solver): weight_decay * sum(w^2)"
        " / 2 over conv and fc kernels.",
    )
    decay_all_weights: bool = _field(
        False,
        "Also decay BN gamma/beta and biases (the paper's solver decays only what --weight_decay names by "
        "default here: kernels).",
    )
    label_smoothing: float = _field(
        0.0, "Label smoothing of the cross-entropy targets (not in the paper; 0.1 is common for long ImageNet runs)."
    )
    lr_schedule: str = _field(
        "steps",
        "steps: divide by 10 at --lr_boundaries; plateau: divide by 10 when the eval error stops improving (the "
        "paper's ImageNet rule); cosine; constant.",
        LR_SCHEDULES,
    )
    lr_boundaries: tuple[int, ...] = _field(
        (32000, 48000),
        "Iterations at which the steps schedule divides the learning rate by 10 (32k, 48k for CIFAR-10).",
    )
    lr_boundary_epochs: tuple[float, ...] = _field(
        (),
        "Boundaries in epochs instead of iterations (30,60,90, the common ImageNet step schedule, is the "
        "ImageNet default); give these or --lr_boundaries.",
    )
    lr_decay: float = _field(0.1, "Factor applied at each boundary or plateau.")
    lr_scaling: str = _field(
        "none",
        "linear: learning_rate * batch_size / base_batch_size (Goyal et al. 2017), for large batches.",
        LR_SCALINGS,
    )
    base_batch_size: int = _field(128, "Batch size at which --learning_rate is meant, for --lr_scaling=linear.")
    warmup_epochs: float = _field(
        0.0, "Gradual warm-up: the learning rate rises linearly from 0 over this many epochs (large batches)."
    )
    error_warmup: bool | None = _field(
        None,
        "ResNet-110's warm-up: --error_warmup_lr until the running training error is below "
        "--error_warmup_threshold, then the schedule. Default: on for CIFAR nets with n >= 18.",
    )
    error_warmup_lr: float = _field(0.01, "Learning rate during the error warm-up (0.01 in section 4.2).")
    error_warmup_threshold: float = _field(
        0.8, "Running training error below which the error warm-up ends (80 % in section 4.2)."
    )
    plateau_patience: int = _field(
        5, "plateau schedule: evaluations without an improvement of the eval top-1 error before dividing."
    )
    plateau_min_delta: float = _field(
        0.001, "plateau schedule: smallest drop of the eval top-1 error that counts as an improvement."
    )
    # How to run.
    strategy: str = _field(
        "default",
        "tf.distribute strategy: default, one_device, mirrored (all local GPUs, or all logical CPUs), multi_worker "
        "(its cluster from TF_CONFIG or Slurm, see --cluster_resolver), tpu (--tpu).",
        STRATEGIES,
    )
    cluster_resolver: str | None = _field(
        None,
        "Where multi_worker finds its cluster: tf_config (TF_CONFIG, as Kubeflow's TFJob sets it), slurm (the "
        "Slurm step's environment, through TensorFlow's SlurmClusterResolver); None: TF_CONFIG where set, else Slurm's.",
        (None,) + CLUSTER_RESOLVERS,
    )
    tpu: str | None = _field(None, "TPU name or grpc:// address for --strategy=tpu ('' or 'local' for a TPU VM).")
    dtype: str = _field(
        "float32",
        "Compute dtype: float32, bfloat16 (mixed, variables float32), float16 (mixed, with loss scaling).",
        DTYPES,
    )
    jit_compile: bool = _field(
        False,
        "Compile the forward and backward pass with XLA: for GPUs and TPUs; XLA:CPU runs convolutions "
        "without oneDNN, so on a CPU it trains slower than without (BENCHMARKS.md, Findings).",
    )
    steps_per_loop: int = _field(
        100,
        "Iterations per call into the graph (a while loop on the device; the learning rate is computed there). "
        "Logs, evaluations, checkpoints and the SIGTERM check happen between loops; a loop also ends at their "
        "intervals and is shortened to about a second of work, so preemption is still answered within seconds.",
    )
    synthetic_data: bool = _field(
        False,
        "Train on one random batch kept on the device instead of the data set (no data is read): the step's "
        "speed without the input pipeline's.",
    )
    seed: int | None = _field(
        None, "Seed for initialisation and data order; with --deterministic, runs repeat bit for bit."
    )
    deterministic: bool = _field(False, "Deterministic ops and data order (slower), for exact reruns and resumes.")
    # Data.
    preprocess_mode: str | None = _field(
        None,
        "Input preprocessing: pixel_mean (the training set's mean: per pixel for in-memory sets, sections "
        "3.4/4.2; ImageNet's per-channel mean; for other sets the per-channel mean of their training images, "
        "computed once and kept in the run dir), caffe, torch, tf, unit (x / 255), none (the model scales 0..255 "
        "itself); None: what --init_weights expect, else pixel_mean.",
        (None,) + MODES,
    )
    image_size: int | None = _field(
        None, "Training and eval crop size; None: the data set's (32 for CIFAR-10 and digits, 224 for ImageNet)."
    )
    val_split: float = _field(
        0.0,
        "Hold out this fraction of the training split, stratified by class with a fixed seed (0.1: CIFAR-10's 5k "
        "of 50k, section 4.2), and evaluate on it; for sets without a validation split of their own (in-memory "
        "sets, class folders with train/ only). The held-out files are listed in the run dir. 0: none.",
    )
    shuffle_buffer: int | None = _field(None, "Shuffle buffer size; None: the data layer's default.")
    cache: bool | None = _field(None, "Cache the decoded data set in memory; None: the data layer's default.")
    # Checkpoints and reporting.
    checkpoint_interval: int = _field(
        1000, "Save a checkpoint every this many iterations (and at the end, and on SIGTERM)."
    )
    keep_checkpoints: int = _field(5, "How many recent checkpoints to keep.")
    checkpoint_iterator: bool | None = _field(
        None,
        "Save the input pipeline's position (and shuffle buffer) with each checkpoint, so a resume sees the "
        "same data; only the default strategy can. None: for in-memory data sets (digits, CIFAR) only, as a "
        "streamed set's buffer is large.",
    )
    eval_interval: int | None = _field(
        None, "Evaluate every this many iterations; None: once per epoch; 0: only at the end."
    )
    log_interval: int = _field(100, "Write a log line and summaries every this many iterations.")
    # Fine-tuning.
    init_weights: str | None = _field(
        None,
        "Start from these weights: imagenet, a .weights.h5/.keras file, or a training run dir (its latest checkpoint).",
    )
    freeze: str | None = _field(
        None, "Freeze the backbone up to and including this stage (conv1, conv2, conv3, conv4, conv5)."
    )
    freeze_bn: bool = _field(
        False, "Keep BN statistics and affine parameters fixed (as the paper does when fine-tuning for detection)."
    )


CIFAR_RECIPE = {}
IMAGENET_RECIPE = {
    "model": "resnet50",
    "model_dir": "runs/resnet50",
    "batch_size": 256,
    "train_steps": 600_000,
    "lr_schedule": "plateau",
    "lr_boundaries": (),
    "lr_boundary_epochs": (30, 60, 90),
    "base_batch_size": 256,
    "checkpoint_interval": 5000,
}
RECIPES = {"cifar": CIFAR_RECIPE, "imagenet": IMAGENET_RECIPE}


def recipe(family, **overrides):
    """The paper's recipe for `family` ("cifar": section 4.2, "imagenet": section 3.4)."""
    if family not in RECIPES:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}")
    return TrainConfig(**{**RECIPES[family], **overrides})


def model_family(model):
    """ "cifar" or "imagenet": the stem of a registered architecture."""
    from keras_resnet.builders import get_builder

    return get_builder(model).spec.stem


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {tuple(allowed)}")


def _positive(name, value, minimum=1):
    if value is None or value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}")


def validate(config):
    """Check everything that needs no TensorFlow and no data, before anything starts.

    Each ValueError names the bad value and the allowed ones.
    """
    from keras_resnet.builders import get_builder

    for field in dataclasses.fields(config):
        if field.metadata.get("choices"):
            _choice(field.name, getattr(config, field.name), field.metadata["choices"])
    model_family(config.model)
    if config.shortcut is not None:
        _choice("shortcut", config.shortcut, ("A", "B", "C"))
        if not get_builder(config.model).residual:
            raise ValueError(f"shortcut={config.shortcut!r} given for {config.model}, a plain net without shortcuts")
    _positive("batch_size", config.batch_size)
    _positive("train_steps", config.train_steps)
    _positive("checkpoint_interval", config.checkpoint_interval)
    _positive("keep_checkpoints", config.keep_checkpoints)
    _positive("log_interval", config.log_interval)
    _positive("steps_per_loop", config.steps_per_loop)
    if config.classes is not None:
        _positive("classes", config.classes)
    if config.image_size is not None:
        _positive("image_size", config.image_size)
    if config.train_epochs is not None and config.train_epochs <= 0:
        raise ValueError(f"train_epochs={config.train_epochs!r} must be > 0")
    if config.eval_interval is not None and config.eval_interval < 0:
        raise ValueError(f"eval_interval={config.eval_interval!r} must be >= 0 (0: only at the end)")
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate={config.learning_rate!r} must be > 0")
    if config.weight_decay < 0:
        raise ValueError(f"weight_decay={config.weight_decay!r} must be >= 0")
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing={config.label_smoothing!r} must be in [0, 1)")
    for name in ("lr_boundaries", "lr_boundary_epochs"):
        if list(getattr(config, name)) != sorted(getattr(config, name)):
            raise ValueError(f"{name}={getattr(config, name)!r} must be increasing")
    if config.lr_boundaries and config.lr_boundary_epochs:
        raise ValueError(
            f"lr_boundaries={config.lr_boundaries!r} and lr_boundary_epochs={config.lr_boundary_epochs!r}: give one of "
            "them and set the other empty (--lr_boundaries= or --lr_boundary_epochs=)"
        )
    if config.strategy == "tpu" and config.tpu is None:
        raise ValueError("strategy='tpu' needs --tpu (a TPU name, grpc:// address, or 'local')")
    if os.path.exists(config.model_dir) and not os.path.isdir(config.model_dir):
        raise ValueError(f"model_dir={config.model_dir!r} exists and is not a directory")
    if (config.freeze or config.freeze_bn) and not config.init_weights:
        raise ValueError("freeze/freeze_bn fine-tune pretrained weights: give --init_weights too")
    if not 0 <= config.val_split < 1:
        raise ValueError(f"val_split={config.val_split!r} must be a fraction in [0, 1) (0: none)")
    return config


def dataset_name(config):
    """The data set a config trains on: --dataset, else what --data_dir holds (class folders
    by their directory's name, CIFAR python files as cifar10/cifar100, TFRecords or a TFDS
    dir as imagenet), else cifar10 for CIFAR nets and imagenet for ImageNet nets."""
    if config.dataset:
        return config.dataset
    if not config.data_dir:
        return "cifar10" if model_family(config.model) == "cifar" else "imagenet"
    from keras_resnet import data

    kind = data.detect_source(config.data_dir)
    if kind == "folders":
        return data.folder_dataset_name(config.data_dir)
    if kind == "cifar_python":
        return data.cifar_name(config.data_dir)
    return "imagenet"


def _shortcut(config):
    """The shortcut option the model gets: --shortcut, else the paper's for its stem (None for plain nets)."""
    from keras_resnet.builders import DEFAULT_SHORTCUT, get_builder

    builder = get_builder(config.model)
    return (config.shortcut or DEFAULT_SHORTCUT[builder.spec.stem]) if builder.residual else None


# A run's identity beside its record: the data it was trained on. A resume must give the same.
DATA_IDENTITY = ("dataset", "val_split", "num_examples", "batch_size")
# Record parts a resume must keep, in words.
RECORD_IDENTITY = {
    "class names": lambda record: None if record.class_names is None else list(record.class_names),
    "preprocessing mode": lambda record: record.preprocess_mode,
    "evaluation view": lambda record: {"resize": record.eval_resize, "crop": record.eval_crop},
}
# Architecture fields a registry name ("resnet20") stands for.
NETWORK_KEYS = ("block", "blocks_per_stage", "widths", "stem", "residual")


def _without(fields, keys):
    return {k: v for k, v in fields.items() if k not in keys}


# Training settings that follow from others or name the run itself: not reported as changed.
NOT_SETTINGS = ("model_dir",)


def _shown(value):
    """A recorded or given value in a message: long lists and mean images shortened."""
    if isinstance(value, np.ndarray):
        channels = np.asarray(value, dtype="float64").reshape(-1, 3).mean(axis=0)
        means = f"channel means ({', '.join(f'{c:.2f}' for c in channels)})"
        return means if value.size == 3 else f"a {'x'.join(map(str, value.shape))} mean image, {means}"
    if isinstance(value, list) and len(value) > 8:
        return f"{len(value)} names {value[:4]}...{value[-2:]}"
    return repr(value)


def _record_differences(recorded, given):
    """[(what, recorded value, given value)] where two records of a run differ."""
    if recorded is None or given is None:
        return (
            []
            if recorded is given
            else [("network", recorded and recorded.architecture.name, given and given.architecture.name)]
        )
    found = [
        (what, part(recorded), part(given)) for what, part in RECORD_IDENTITY.items() if part(recorded) != part(given)
    ]
    old, new = recorded.architecture.to_json(), given.architecture.to_json()
    if recorded.architecture.name != given.architecture.name:
        found.append(("network", recorded.architecture.name, given.architecture.name))
        old, new = _without(old, NETWORK_KEYS), _without(new, NETWORK_KEYS)
    found += [
        (f"architecture {key}", old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    means = recorded.mean, given.mean
    if (means[0] is None) != (means[1] is None) or (
        means[0] is not None and (means[0].shape != means[1].shape or not np.allclose(*means, atol=1e-3))
    ):
        found.append(("mean", means[0], means[1]))
    return found


def resume_changes(model_dir, recorded, given_record, given_training):
    """Compare a resume with what `model_dir` records ({"record", "training"} of
    `keras_resnet.run_dir.read_config`): a ValueError naming each recorded and given value
    where the run's identity differs (its record, or its data); else {setting: [old, new]}
    of the settings that changed (learning rate, schedule, intervals, dtype, ...)."""
    from keras_resnet.record import Record

    record = None if recorded["record"] is None else Record.from_json(recorded["record"])
    training = recorded["training"]
    differences = _record_differences(record, given_record)
    differences += [
        (key, training.get(key), given_training.get(key))
        for key in DATA_IDENTITY
        if training.get(key) != given_training.get(key)
    ]
    if differences:
        named = "; ".join(f"{what}: recorded {_shown(old)}, given {_shown(new)}" for what, old, new in differences)
        raise ValueError(
            f"{model_dir} holds another run ({named}): to resume it, give its data and settings; to start a new "
            f"run, use another --model_dir; to fine-tune from this one, use another --model_dir with --init_weights {model_dir}"
        )
    keys = sorted((set(training) | set(given_training)) - set(NOT_SETTINGS) - set(DATA_IDENTITY))
    return {
        key: [training.get(key), given_training.get(key)]
        for key in keys
        if training.get(key) != given_training.get(key)
    }


def is_deep_cifar(model):
    """A CIFAR net with n >= 18 (ResNet-110 and deeper), which section 4.2 warms up."""
    from keras_resnet.builders import get_builder

    spec = get_builder(model).spec
    return spec.stem == "cifar" and spec.blocks_per_stage[0] >= 18


def resolve(config, num_examples, num_classes, image_size):
    """The config with every derived value filled in (what config.json records).

    `num_examples` is the training split's size: epochs become iterations with it.
    """
    steps_per_epoch = max(1, num_examples // config.batch_size)
    changes = {
        "classes": config.classes or num_classes,
        "error_warmup": is_deep_cifar(config.model) if config.error_warmup is None else config.error_warmup,
        "eval_interval": steps_per_epoch if config.eval_interval is None else config.eval_interval,
    }
    if config.train_epochs is not None:
        changes["train_steps"] = math.ceil(config.train_epochs * steps_per_epoch)
    if config.lr_boundary_epochs:
        changes["lr_boundaries"] = tuple(round(e * steps_per_epoch) for e in config.lr_boundary_epochs)
    resolved = dataclasses.replace(config, **changes)
    return resolved, {"steps_per_epoch": steps_per_epoch, "image_size": tuple(image_size), "num_examples": num_examples}


def base_learning_rate(config):
    """--learning_rate, linearly scaled with the batch size when asked (Goyal et al. 2017)."""
    if config.lr_scaling == "linear":
        return config.learning_rate * config.batch_size / config.base_batch_size
    return config.learning_rate


def model_kwargs(config, image_size):
    """Builder arguments of the run's model, what its record is made from: the head and
    input size, the architecture arguments --init_weights were made with, and the flags."""
    kwargs = {}
    if config.init_weights:
        from keras_resnet import weights as weights_lib

        kwargs.update(weights_lib.build_kwargs(config.init_weights))
    kwargs.update(classes=config.classes, input_shape=[int(image_size[0]), int(image_size[1]), 3])
    kwargs.update({k: getattr(config, k) for k in ("shortcut", "stride_in") if getattr(config, k) is not None})
    return kwargs


# What the trainer's flat config holds beside the TrainConfig for the record (not the training config).
RECORD_KEYS = ("class_names", "preprocessing", "model_kwargs", "eval_view", "preprocess_mode")


def run_record(flat, pixel_mean=None):
    """The Record of a run's network from the trainer's flat config (TrainConfig fields plus
    "model_kwargs", "preprocessing", "class_names", "eval_view"): its architecture (registry
    name and builder arguments), preprocessing and class names, and its evaluation view (a
    centre crop of the training size; ImageNet-stem nets from the shorter side resized in
    the ratio 256:224). None for a model_fn's network (no registered model)."""
    from keras_resnet import builders
    from keras_resnet.record import Record

    if not flat.get("model"):
        return None
    builder = builders.get_builder(flat["model"])
    kwargs = dict(flat.get("model_kwargs") or {})
    known = {k: kwargs[k] for k in builders.ARCHITECTURE_ARGS if kwargs.get(k) is not None}
    architecture = builders.architecture_of(builder.spec, builder.residual, **known)
    preprocessing = flat.get("preprocessing") or {"mode": "caffe"}
    crop = architecture.input_shape[0]
    resize = round(crop * 256 / 224) if architecture.spec.stem == "imagenet" and crop else None
    if flat.get("eval_view"):  # what the data layer's centre view did in training (keras_resnet.data.eval_view)
        resize, crop = flat["eval_view"]["resize"], flat["eval_view"]["crop"]
    return Record(
        architecture,
        preprocess_mode=preprocessing["mode"],
        mean=pixel_mean,
        class_names=flat.get("class_names"),
        eval_resize=resize,
        eval_crop=crop,
        weights={"source": f"trained: {flat.get('dataset') or 'own data'}, {flat.get('train_steps')} steps"},
    )


def training_part(flat):
    """The training config config.json keeps: the flat config without what the record holds,
    as JSON reads it back."""
    import json

    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in RECORD_KEYS}, default=str))


def write_run(model_dir, flat, pixel_mean=None):
    """Write the run's config.json (`keras_resnet.run_dir`) from the trainer's flat config."""
    from keras_resnet import run_dir

    run_dir.write_config(model_dir, run_record(flat, pixel_mean), training_part(flat))


def to_dict(config):
    """JSON-ready fields of the config (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
