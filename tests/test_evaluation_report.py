"""The per-class part of an evaluation stays readable: classes without images are left out
(a 3-class subset under a 1,000-class head), above 50 classes only the worst and best and
the largest confusions are listed, and the matrix is drawn only where it can be read.
Per-class accuracies are checked against scikit-learn's recall on the same predictions."""

import numpy as np
from sklearn.metrics import confusion_matrix, recall_score

from keras_resnet.training import analysis


def _predictions(classes, present, per_class, seed):
    """(true, predicted) labels: `per_class` images of each class in `present`, predicted
    right with a class-dependent chance, else as a random class of the head."""
    rng = np.random.default_rng(seed)
    true = np.repeat(present, per_class)
    right = rng.random(len(true)) < np.linspace(0.2, 0.95, len(present)).repeat(per_class)
    return true, np.where(right, true, rng.integers(0, classes, len(true)))


def test_a_three_class_subset_of_a_1000_class_head_lists_no_empty_rows():
    names = [f"class{i}" for i in range(1000)]
    true, predicted = _predictions(1000, np.array([0, 1, 2]), 20, seed=0)
    confusion = confusion_matrix(true, predicted, labels=range(1000))
    report = analysis.class_report(confusion, names)
    rows = [line for line in report.splitlines() if line.split() and line.split()[0] in names]
    assert report.splitlines()[0] == "3 of the 1000 classes have images; the others are left out"
    recall = recall_score(true, predicted, labels=[0, 1, 2], average=None)
    table = [line.split() for line in report.splitlines()[2:5]]
    assert [row[0] for row in table] == ["class0", "class1", "class2"]
    assert [float(row[1].rstrip("%")) for row in table] == [round(100 * r, 2) for r in recall]
    assert len(report.splitlines()) < 40 and len(rows) < 40
    matrix, shown = analysis.readable_confusion(confusion, names)
    assert shown[:3] == ["class0", "class1", "class2"] and matrix.sum() == 60 and len(shown) <= 60


def test_above_50_classes_the_worst_and_best_and_largest_confusions_are_listed():
    names = [f"c{i:03d}" for i in range(200)]
    true, predicted = _predictions(200, np.arange(200), 10, seed=1)
    predicted[true == 7] = 9  # class 7 is always taken for class 9
    confusion = confusion_matrix(true, predicted, labels=range(200))
    report = analysis.class_report(confusion, names)
    recall = recall_score(true, predicted, labels=range(200), average=None)
    worst = [line.split()[0] for line in report.split("the 10 worst of 200 classes:\n")[1].splitlines()[1:11]]
    best = [line.split()[0] for line in report.split("the 10 best:\n")[1].splitlines()[1:11]]
    by_recall = sorted(range(200), key=lambda i: (recall[i], i))
    assert worst == [names[i] for i in by_recall[:10]]
    assert best == [names[i] for i in sorted(range(200), key=lambda i: (-recall[i], -i))[:10]]
    assert "  c007 -> c009: 10 (100.0%)" in report.split("most confused")[1].splitlines()[1]
    assert "confusion (rows" not in report and len(report.splitlines()) < 50
    assert analysis.readable_confusion(confusion, names) is None
