"""Classification metrics on top of scikit-learn, returning plain Python floats.

Inputs may be lists, NumPy arrays or torch tensors. ``y_true``/``y_pred`` are integer class ids of
shape ``(N,)``; ``scores`` are ``(N, C)`` class scores (logits or probabilities).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm

from .checkpoint import atomic_path
from .errors import DataError

__all__ = ["classification_metrics", "top_k_accuracy", "confusion_matrix_png", "classification_report_text"]


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()  # NumPy has no bfloat16
    a = np.asarray(x)
    if a.size == 0:
        raise DataError(f"{name} is empty: nothing to score")
    return a


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _array(y_true, "y_true").reshape(-1), _array(y_pred, "y_pred").reshape(-1)
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return t, p


def classification_metrics(y_true: Any, y_pred: Any, labels: Sequence[int] | None = None) -> dict[str, float]:
    """``{"accuracy", "precision", "recall", "f1"}``; the last three macro-averaged, zero_division=0.

    ``labels`` fixes the classes that the macro average runs over (default: those present).
    """
    t, p = _pair(y_true, y_pred)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(
        t, p, labels=None if labels is None else list(labels), average="macro", zero_division=0)
    return {"accuracy": float(skm.accuracy_score(t, p)), "precision": float(prec),
            "recall": float(rec), "f1": float(f1)}


def top_k_accuracy(y_true: Any, scores: Any, k: int = 5) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (classes ``0..C-1``)."""
    t = _array(y_true, "y_true").reshape(-1)
    s = _array(scores, "scores")
    if s.ndim != 2 or s.shape[0] != t.size:
        raise DataError(f"scores must have shape (N={t.size}, C), got {tuple(s.shape)}")
    n_classes = s.shape[1]
    if k >= n_classes:
        return 1.0
    if n_classes == 2:  # sklearn reads binary scores as one column: that of class 1
        s = s[:, 1] - s[:, 0]
    return float(skm.top_k_accuracy_score(t, s, k=k, labels=np.arange(n_classes)))


def confusion_matrix_png(y_true: Any, y_pred: Any, class_names: Sequence[str], path: str | Path,
                         title: str | None = None, normalize: str | None = None) -> Path:
    """Draw the confusion matrix (rows: true, columns: predicted) to ``path`` as PNG, atomically.

    Classes are ids ``0..len(class_names)-1``. ``normalize`` is passed to sklearn
    (``None``, ``"true"``, ``"pred"``, ``"all"``). Cell values are drawn up to 30 classes.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    t, p = _pair(y_true, y_pred)
    n = len(class_names)
    size = min(max(4.0, 0.45 * n + 2.5), 30.0)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    skm.ConfusionMatrixDisplay.from_predictions(
        t, p, labels=np.arange(n), display_labels=list(class_names), normalize=normalize, ax=ax,
        colorbar=n <= 30, include_values=n <= 30, xticks_rotation="vertical" if n > 6 else "horizontal",
        values_format=".2f" if normalize else "d", cmap="Blues")
    if title:
        ax.set_title(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close("all")
    return path


def classification_report_text(y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None,
                               digits: int = 4) -> str:
    """sklearn's per-class precision/recall/F1 table (classes ``0..len(class_names)-1`` if given)."""
    t, p = _pair(y_true, y_pred)
    labels = None if class_names is None else np.arange(len(class_names))
    return skm.classification_report(t, p, labels=labels, target_names=None if class_names is None else
                                     list(class_names), digits=digits, zero_division=0)
