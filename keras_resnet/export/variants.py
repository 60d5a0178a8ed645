"""Checks shared by the reduced-precision copies of the ONNX, LiteRT and OpenVINO exports: on
which images they are compared with the float64 network, the bounds they must meet (fp16's
for fp16, int8's for every int8 kind) and how their reports print."""

from __future__ import annotations

import numpy as np

from keras_resnet.export import verify

# Bounds of the reduced-precision copies against the float64 network, set from what they
# measured on real images (BENCHMARKS.md): fp16's relative logits error on photos through
# trained-statistics ResNet-18..152 and the digits ResNet-20; top-1 agreement and accuracy
# on the held-out test images where the run has them.
FP16_MAX_LOGITS = 0.05
FP16_MIN_AGREEMENT = 0.99
FP16_MAX_ACCURACY_DROP = 0.005
INT8_MIN_AGREEMENT = 0.95
INT8_MAX_ACCURACY_DROP = 0.02


def bounds(tag, int8_min_agreement=INT8_MIN_AGREEMENT, labelled=True):
    """verify.check_reduced_precision's keyword bounds of the `tag` copy. fp16's agreement
    counts only on labelled held-out images (a trained net's): on photos through a net that
    knows none of them, near-ties flip."""
    if tag == "fp16":
        fp16 = {"max_logits": FP16_MAX_LOGITS, "max_accuracy_drop": FP16_MAX_ACCURACY_DROP}
        return {**fp16, "min_agreement": FP16_MIN_AGREEMENT} if labelled else fp16
    return {"min_agreement": int8_min_agreement, "max_accuracy_drop": INT8_MAX_ACCURACY_DROP}


def check(label, outputs, graph, reference_logits, labels, tag_bounds):
    """The reduced-precision report of one runtime's outputs on images whose
    `Reference.logits` is `reference_logits`, or a VerificationError naming the bound it
    missed (its top-k checked against its own probabilities first)."""
    verify.check_heads(outputs, top_k=graph.top_k, atol=1e-2)
    report = verify.reduced_precision_report(outputs["logits"], reference_logits, labels)
    return verify.check_reduced_precision(label, report, **tag_bounds)


def comparison_images(graph, calibration_images, eval_images, eval_labels):
    """(images, labels or None, description) on which the copies are compared: held-out test
    images if given, else the calibration images, else photos."""
    if eval_images is not None:
        labels = None if eval_labels is None else np.asarray(eval_labels)
        return np.asarray(eval_images, dtype="float32"), labels, "test images"
    if calibration_images is not None:
        return np.asarray(calibration_images, dtype="float32"), None, "calibration images"
    return verify.verification_set(graph, 32)[1], None, "photos"


def accuracy(logits, labels):
    """Top-1 accuracy of `logits` on `labels`."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def describe(report):
    """`key value, ...` of a report, floats to 4 significant digits, for the printout."""
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in report.items()
    )


def check_all(runtime, runs, graph, reference, images, labels, where, int8_min_agreement, log):
    """Run every file ({tag: `images -> outputs`}, "fp32" first) on the comparison images;
    check each copy against its bounds. Returns (reports of the copies, the test accuracy
    of each file, of the Keras float32 model and of the float64 network with each file's
    top-1 agreement with Keras float32, or None without labels)."""
    expected = reference.logits(images)
    reports, accuracies, agreements = {}, {}, {}
    keras_top1 = expected["float32"].argmax(axis=1)
    for tag, run in runs.items():
        outputs = run(images)
        if labels is not None:
            accuracies[tag] = accuracy(outputs["logits"], labels)
            agreements[f"{tag}_agreement_with_keras"] = accuracy(outputs["logits"], keras_top1)
        if tag == "fp32":
            continue
        tag_bounds = bounds(tag, int8_min_agreement, labelled=labels is not None)
        reports[tag] = check(f"{runtime} {tag}", outputs, graph, expected, labels, tag_bounds)
        log(f"  {tag} vs the float64 network on {len(images)} {where}: {describe(reports[tag])}")
    if not accuracies:
        return reports, None
    log(
        f"  test accuracy on {len(labels)} images: "
        + ", ".join(f"{tag} {value:.4f}" for tag, value in accuracies.items())
        + f" (Keras float32 {accuracy(expected['float32'], labels):.4f}, float64 {accuracy(expected['float64'], labels):.4f})"
    )
    return reports, {
        "images": int(len(labels)),
        "keras_float32": accuracy(expected["float32"], labels),
        "float64": accuracy(expected["float64"], labels),
        **accuracies,
        **agreements,
    }


def verify_float32(label, run, graph, reference=None, *, batch_sizes=verify.BATCH_SIZES, log=print, **bound):
    """A float32 file's `run` (`images -> outputs`) on real photos at each batch size against
    the float64 network, within verify.check_float32's bound. Returns {"batch<n>": distances}."""
    reference = reference or verify.Reference(graph.source)
    _, images = verify.verification_set(graph, max(batch_sizes))
    expected = reference.logits(images)
    report = {}
    for batch_size in batch_sizes:
        first = {key: logits[:batch_size] for key, logits in expected.items()}
        outputs = run(images[:batch_size])
        distances = verify.verify_outputs(f"{label} batch {batch_size}", outputs, first, top_k=graph.top_k, **bound)
        report[f"batch{batch_size}"] = distances
        log(
            f"  {label} batch {batch_size}: logits {distances['logits']:.3g} from float64 "
            f"(Keras float32 {distances['keras_float32_logits']:.3g})"
        )
    return report
