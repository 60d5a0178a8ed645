"""The paper's analyses of trained runs: error curves (Figs. 1, 4, 6), a table of final errors
(Tables 2 and 6) and the standard deviations of layer responses (Fig. 7, section 4.2).

    runs = [read_run(d) for d in ("runs/plain20", "runs/plain56", "runs/resnet20", "runs/resnet56")]
    save_figure(plot_error_curves(runs), "fig6.png")
    print(errors_table(runs))
    responses = [run_responses(d) for d in ...]
    save_figure(plot_responses(responses), "fig7.png")

A run is a training run dir (`keras_resnet.training`): its config.json names the model and
the data, metrics.jsonl holds its curves, checkpoints/ its weights. matplotlib is imported
only by the plotting functions (it is an optional extra).
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np

from keras_resnet.run_dir import is_url


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One run's error curves (in %) against iterations, as metrics.jsonl recorded them."""

    model_dir: str
    model: str
    residual: bool
    depth: int
    train_steps: tuple[int, ...]
    train_error: tuple[float, ...]
    test_steps: tuple[int, ...]
    test_error: tuple[float, ...]
    lr_drops: tuple[int, ...]
    label: str = ""

    @property
    def final_train_error(self):
        return self.train_error[-1] if self.train_error else float("nan")

    @property
    def final_test_error(self):
        return self.test_error[-1] if self.test_error else float("nan")


def _architecture(model_dir):
    """The run's recorded architecture (name, residual, spec.depth), a ValueError if the run
    is not a training run dir or trained a network no builder rebuilds."""
    from keras_resnet import run_dir

    run_dir.read_config(model_dir)  # its error names the dir
    try:
        return run_dir.record_of(model_dir).architecture
    except ValueError as error:
        raise ValueError(f"{model_dir!r}: {error}") from None


def _by_step(records, split):
    """{step: record} of one split; a later record of the same step wins (a resumed run's
    final evaluation repeats the step of the last one)."""
    return {r["step"]: r for r in records if r["split"] == split}


def read_run(model_dir):
    """The curves of one run dir, a ValueError if it is not a run or has no metrics yet."""
    from keras_resnet import run_dir
    from keras_resnet.training.reporting import METRICS_NAME, learning_rate_drops, read_metrics

    architecture = _architecture(model_dir)
    records = read_metrics(model_dir)
    if not records:
        raise ValueError(f"{model_dir!r} has no {METRICS_NAME} records yet: train it first")
    train = sorted(_by_step(records, "train").values(), key=lambda r: r["step"])
    test = sorted(_by_step(records, "eval").values(), key=lambda r: r["step"])
    return RunCurves(
        model_dir=model_dir,
        model=architecture.name,
        residual=architecture.residual,
        depth=architecture.spec.depth,
        train_steps=tuple(r["step"] for r in train),
        train_error=tuple(100 * r["top1_error"] for r in train),
        test_steps=tuple(r["step"] for r in test),
        test_error=tuple(100 * r["top1_error"] for r in test),
        lr_drops=learning_rate_drops(run_dir.training_config(model_dir), train),
        label=architecture.name,
    )


def label_runs(runs):
    """The runs labelled by model name; runs sharing a name get their dir's name added."""
    names = [run.model for run in runs]
    return [
        dataclasses.replace(
            run,
            label=run.model
            if names.count(run.model) == 1
            else f"{run.model} ({os.path.basename(os.path.normpath(run.model_dir))})",
        )
        for run in runs
    ]


def _families(runs):
    """[(title, runs by depth)]: plain nets on the left, residual nets on the right (Fig. 4/6)."""
    groups = []
    for residual, title in ((False, "plain"), (True, "residual")):
        members = sorted((r for r in runs if r.residual == residual), key=lambda r: r.depth)
        if members:
            groups.append((title, members))
    return groups


def run_colours(runs):
    """{model_dir: matplotlib colour}: the k-th run of a depth in its family (plain or
    residual) gets the colour of (depth, k), so plain-20 and ResNet-20 match across panels and
    figures while runs in one panel all differ."""
    keys, seen = {}, {}
    for run in sorted(runs, key=lambda r: r.depth):
        occurrence = seen.get((run.depth, run.residual), 0)
        seen[(run.depth, run.residual)] = occurrence + 1
        keys[run.model_dir] = (run.depth, occurrence)
    ranks = {key: index for index, key in enumerate(sorted(set(keys.values())))}
    return {model_dir: f"C{ranks[key] % 10}" for model_dir, key in keys.items()}


def _new_figure(figsize):
    """A matplotlib Figure with its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_error_curves(runs, title=None, max_error=None):
    """Figs. 4 and 6: top-1 error against iterations, plain nets and residual nets in separate
    panels; training error thin, test error bold, one colour per run, the learning-rate
    drops as dotted vertical lines (`run_colours`). `max_error` (%) tops the y axis (the paper's Fig. 6 shows
    0-20 %); default: the largest error. Returns the matplotlib Figure."""
    if not runs:
        raise ValueError("plot_error_curves needs at least one run")
    if max_error is not None and max_error <= 0:
        raise ValueError(f"max_error={max_error!r} must be > 0 (a percentage)")
    runs = label_runs(runs)
    groups = _families(runs)
    figure = _new_figure((5.5 * len(groups), 4.2))
    axes_list = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    top = max_error or 1.05 * max(max([*r.train_error, *r.test_error], default=1.0) for r in runs)
    colours = run_colours(runs)
    for axes, (family, members) in zip(axes_list, groups):
        for run in members:
            colour = colours[run.model_dir]
            axes.plot(run.train_steps, run.train_error, color=colour, linewidth=0.8, label=f"{run.label} train")
            axes.plot(run.test_steps, run.test_error, color=colour, linewidth=2.5, label=f"{run.label} test")
        for step in sorted({s for run in members for s in run.lr_drops}):
            axes.axvline(step, color="0.5", linestyle=":", linewidth=1.0)
        axes.set(title=f"{family} nets", xlabel="iteration", ylim=(0, min(100.0, top)))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    axes_list[0].set_ylabel("top-1 error (%)")
    figure.suptitle(title or "thin: training error, bold: test error, dotted: learning rate / 10")
    figure.tight_layout()
    return figure


def _percent(value):
    return "-" if np.isnan(value) else f"{value:.2f}"


def errors_table(runs):
    """Final errors as markdown: Table 2's layout (test error by depth, plain against ResNet,
    training error in brackets) and Table 6's (one row per run)."""
    runs = label_runs(runs)
    depths = sorted({r.depth for r in runs})
    lines = ["| layers | plain | ResNet |", "|---|---|---|"]
    for depth in depths:
        cells = []
        for residual in (False, True):
            found = [r for r in runs if r.depth == depth and r.residual == residual]
            cells.append(
                ", ".join(f"{_percent(r.final_test_error)} ({_percent(r.final_train_error)})" for r in found) or "-"
            )
        lines.append(f"| {depth} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Test top-1 error % at the end of training (training error of the last logged iterations in brackets).",
        "",
        "| run | model | layers | iterations | training error % | test error % |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        iterations = max([*r.train_steps, *r.test_steps], default=0)
        lines.append(
            f"| {r.model_dir} | {r.label} | {r.depth} | {iterations} | {_percent(r.final_train_error)} "
            f"| {_percent(r.final_test_error)} |"
        )
    return "\n".join(lines) + "\n"


def response_layers(model):
    """Names of the BN layers right after each 3x3 convolution, in network order: the layers
    whose outputs Fig. 7 measures. Found by kernel size, so the 7x7 ImageNet stem and the 1x1
    convolutions of bottlenecks and projection shortcuts are left out, and the CIFAR stem's
    3x3 conv (the first of the 6n+1 3x3 layers) is in."""
    import keras

    names = {layer.name for layer in model.layers}
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
            bn = layer.name.removesuffix("_conv") + "_bn"
            if not layer.name.endswith("_conv") or bn not in names:
                raise ValueError(f"3x3 convolution {layer.name!r} is not followed by a BN layer named {bn!r}")
            found.append(bn)
    if not found:
        raise ValueError(f"{model.name!r} has no 3x3 convolution")
    return found


@dataclasses.dataclass
class _Moments:
    """Count, mean and summed squared deviations, merged batch by batch in float64 (Chan et
    al.'s pairwise update, so large means do not cancel the variance away)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values):
        values = np.asarray(values, dtype=np.float64).ravel()
        count, mean = values.size, float(values.mean())
        m2 = float(np.square(values - mean).sum())
        total = self.count + count
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def std(self):
        return float(np.sqrt(self.m2 / self.count))


def response_stds(model, batches, layer_names=None):
    """The standard deviation of each 3x3 layer's response over `batches` (Fig. 7).

    The response of a layer is its output after BN, before the ReLU or the shortcut's addition
    (section 4.2), with the model in inference mode (BN applies its moving statistics, as when
    the test error is measured). A layer's std is the population std of all its response
    values together (images x positions x channels): the paper speaks of "the std of the layer
    responses", one number per layer, without a per-channel step. Under BN each channel's
    spread is about its |gamma|, so this number is about sqrt(mean gamma^2 + variance of the
    channels' means); it grows with the spread of beta, which a per-channel average would leave
    out. `batches` yields image batches (or (images, labels) pairs), preprocessed as the model
    expects. Returns a float64 array in the order of `layer_names` (default: response_layers).
    """
    import keras

    layer_names = list(layer_names or response_layers(model))
    probe = keras.Model(model.input, [model.get_layer(name).output for name in layer_names])
    moments = [_Moments() for _ in layer_names]
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs = probe(images, training=False)
        for moment, output in zip(moments, outputs):
            moment.add(keras.ops.convert_to_numpy(output))
    if not moments[0].count:
        raise ValueError("response_stds got no images")
    return np.array([m.std for m in moments])


@dataclasses.dataclass(frozen=True)
class RunResponses:
    """Fig. 7's numbers for one run."""

    model_dir: str
    model: str
    residual: bool
    depth: int
    layer_names: tuple[str, ...]
    stds: tuple[float, ...]
    images: int
    split: str
    label: str = ""


def eval_images(model_dir, record, batch_size=100, max_images=None):
    """(batches, split): the run's own test images (validation for ImageNet-like sets) from
    the data set its config.json names, preprocessed as its record says, at the size it was
    trained, through keras_resnet.data; at most `max_images`."""
    from keras_resnet import data, run_dir
    from keras_resnet.evaluation import default_split

    config = run_dir.training_config(model_dir)
    split = default_split(config["dataset"], config.get("data_dir"))
    dataset = data.make_eval_input_fn(
        config["dataset"],
        split,
        batch_size,
        data_dir=config.get("data_dir"),
        preprocess_mode=record.preprocess_mode,
        mean=record.mean,
        image_size=record.eval_crop,
    )(None)
    if max_images is not None:
        dataset = dataset.unbatch().take(max_images).batch(batch_size)
    return dataset, split


class _CountingBatches:
    """Iterates a dataset of (images, labels) and counts the images it passed on."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.images = 0

    def __iter__(self):
        for images, _ in self.dataset:
            self.images += int(images.shape[0])
            yield images


def run_responses(model_dir, batch_size=100, max_images=None):
    """Fig. 7's stds for a run dir: its newest checkpoint (`keras_resnet.load`) on its own
    test images."""
    import keras_resnet

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images={max_images!r} must be >= 1 (or None: every test image)")
    loaded = keras_resnet.load(model_dir)
    architecture = loaded.record.architecture
    batches, split = eval_images(model_dir, loaded.record, batch_size, max_images)
    names = response_layers(loaded.model)
    counter = _CountingBatches(batches)
    stds = response_stds(loaded.model, counter, names)
    return RunResponses(
        model_dir=model_dir,
        model=architecture.name,
        residual=architecture.residual,
        depth=architecture.spec.depth,
        layer_names=tuple(names),
        stds=tuple(float(s) for s in stds),
        images=counter.images,
        split=split,
        label=architecture.name,
    )


def plot_responses(responses, title=None, log_scale=False):
    """Fig. 7: each run's layer stds in network order (top) and sorted in descending order
    (bottom); plain nets dashed, residual nets solid, a depth's runs in one colour
    (`run_colours`). `log_scale`: a logarithmic std axis, for runs whose stds differ by
    orders of magnitude (the paper's is linear)."""
    from matplotlib.ticker import LogFormatter

    if not responses:
        raise ValueError("plot_responses needs at least one run")
    responses = label_runs(responses)
    colours = run_colours(responses)
    figure = _new_figure((8, 7))
    original, ranked = figure.subplots(2, 1)
    for run in responses:
        style = dict(
            color=colours[run.model_dir], linestyle="-" if run.residual else "--", linewidth=1.5, label=run.label
        )
        positions = np.arange(1, len(run.stds) + 1)
        original.plot(positions, run.stds, marker=".", **style)
        ranked.plot(positions, sorted(run.stds, reverse=True), **style)
    original.set(xlabel="layer index (original)", ylabel="std")
    ranked.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    for axes in (original, ranked):
        if log_scale:
            axes.set_yscale("log")
            axes.yaxis.set_major_formatter(LogFormatter())
            axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1)))
        else:
            axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small")
    split = sorted({r.split for r in responses})
    images = sorted({r.images for r in responses})
    figure.suptitle(
        title
        or f"std of each 3x3 layer's response (after BN, before ReLU/addition), {'/'.join(map(str, images))} "
        f"{'/'.join(split)} images"
    )
    figure.tight_layout()
    return figure


def responses_table(responses):
    """Per run: the mean, largest and smallest layer std, as markdown."""
    responses = label_runs(responses)
    lines = ["| run | model | 3x3 layers | mean std | max std | min std |", "|---|---|---|---|---|---|"]
    for r in responses:
        lines.append(
            f"| {r.model_dir} | {r.label} | {len(r.stds)} | {np.mean(r.stds):.3f} | {max(r.stds):.3f} "
            f"| {min(r.stds):.3f} |"
        )
    return "\n".join(lines) + "\n"


FIGURE_FORMATS = ("png", "pdf", "svg")


def check_output(path):
    """The figure format of `path` (its extension), or a ValueError before any work is done."""
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in FIGURE_FORMATS:
        raise ValueError(f"output={path!r}: the file name must end in one of {tuple('.' + f for f in FIGURE_FORMATS)}")
    if is_url(path):  # gs://, ram://...: its directories appear as files are written
        return extension
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"output={path!r}: its directory {directory!r} does not exist")
    return extension


def check_trained_runs(model_dirs):
    """A ValueError for the first of `model_dirs` that is not a run of a registered model with
    a checkpoint, before any of them is loaded."""
    from keras_resnet import run_dir

    if not model_dirs:
        raise ValueError("no run dirs given")
    for model_dir in model_dirs:
        _architecture(model_dir)
        if not run_dir.checkpoint_prefixes(run_dir.checkpoint_dir(model_dir)):
            raise ValueError(f"no checkpoint in {run_dir.checkpoint_dir(model_dir)!r}: train first")


def save_figure(figure, path):
    """Write the figure in the format its extension names (png, pdf, svg), atomically, to a
    local path or a `gs://`, `ram://`... URL."""
    from keras_resnet.run_dir import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format=check_output(path))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_figure_and_table(figure, path, table, table_path=None):
    """What the figure scripts end with: the figure written to `path`, the markdown `table`
    printed and, with `table_path`, written there too (both atomically)."""
    from keras_resnet.run_dir import atomic_write_bytes

    save_figure(figure, path)
    print(table)
    if table_path:
        atomic_write_bytes(table_path, table.encode())
    print(f"wrote {path}" + (f" and {table_path}" if table_path else ""))


# ---------------------------------------------------------------- an evaluation's classes

# Above this many classes with images, the per-class table gives the worst and best only.
COMPACT_ABOVE = 50
LISTED_CLASSES = 10
# Largest confusion matrix drawn as text, and as a PNG with readable labels.
TEXT_MATRIX_MAX = 20
PNG_MATRIX_MAX = 60


def _class_names(confusion, class_names):
    return [str(n) for n in (class_names if class_names is not None else range(len(confusion)))]


def present_classes(confusion):
    """Indices of the classes that have images or receive predictions: the only rows and
    columns of a confusion matrix with anything to say (a 3-class subset under a
    1,000-class head has at most a few dozen)."""
    return np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))


def _table(confusion, names, rows, width):
    totals = confusion.sum(axis=1)
    lines = [f"{'class':<{width}}{'accuracy':>10}{'images':>8}"]
    for i in rows:
        lines.append(f"{names[i]:<{width}}{f'{100 * confusion[i, i] / totals[i]:.2f}%':>10}{totals[i]:>8}")
    return lines


def top_confusions(confusion, count=LISTED_CLASSES):
    """(true, predicted, images) of the largest off-diagonal cells, largest first (ties by index)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    cells = np.flatnonzero(off)
    order = cells[np.lexsort((cells, -off.ravel()[cells]))][:count]
    return [(int(k // len(off)), int(k % len(off)), int(off.ravel()[k])) for k in order]


def class_report(confusion, class_names=None):
    """An evaluation per class, as text that stays short: per-class accuracy of the classes
    with images (all of them up to COMPACT_ABOVE, else the LISTED_CLASSES worst and best),
    the largest confusions, and the confusion matrix over the classes present where it fits
    (TEXT_MATRIX_MAX). Classes without images are counted, not listed."""
    confusion = np.asarray(confusion)
    names = _class_names(confusion, class_names)
    totals = confusion.sum(axis=1)
    rows = np.flatnonzero(totals)
    width = max(8, *(len(names[i]) + 2 for i in rows)) if len(rows) else 8
    lines = []
    if len(rows) < len(confusion):
        lines.append(f"{len(rows)} of the {len(confusion)} classes have images; the others are left out")
    if len(rows) <= COMPACT_ABOVE:
        lines += _table(confusion, names, rows, width)
    else:
        accuracy = confusion[rows, rows] / totals[rows]
        order = rows[np.lexsort((rows, accuracy))]
        lines += [f"the {LISTED_CLASSES} worst of {len(rows)} classes:"]
        lines += _table(confusion, names, order[:LISTED_CLASSES], width)
        lines += [f"the {LISTED_CLASSES} best:"]
        lines += _table(confusion, names, order[::-1][:LISTED_CLASSES], width)
    confused = top_confusions(confusion)
    if confused:
        lines.append("most confused (true -> predicted: images, share of the true class):")
        lines += [f"  {names[t]} -> {names[p]}: {n} ({100 * n / totals[t]:.1f}%)" for t, p, n in confused]
    shown = present_classes(confusion)
    if len(shown) <= TEXT_MATRIX_MAX:
        lines.append("confusion (rows: true class, columns: predicted):")
        lines.append(" " * width + "".join(f"{names[j][: width - 1]:>{width}}" for j in shown))
        lines += [f"{names[i]:<{width}}" + "".join(f"{confusion[i, j]:>{width}}" for j in shown) for i in shown]
    return "\n".join(lines)


def readable_confusion(confusion, class_names=None, limit=PNG_MATRIX_MAX):
    """(matrix, names) over the classes present, where at most `limit` are (a figure whose
    rows can still be read), else None."""
    shown = present_classes(np.asarray(confusion))
    if len(shown) > limit:
        return None
    names = _class_names(confusion, class_names)
    return np.asarray(confusion)[np.ix_(shown, shown)], [names[i] for i in shown]
