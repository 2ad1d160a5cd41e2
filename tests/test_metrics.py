"""sklearn-backed metric helpers against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from panformer.core.errors import DataError
from panformer.core.metrics import classification_metrics, classification_report_text, confusion_matrix_png, top_k_accuracy


def test_classification_metrics_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    m = classification_metrics(y_true, y_pred)
    # precision per class: 1/2, 2/3, 1/1; recall: 1/2, 2/2, 1/2
    p, r = (0.5 + 2 / 3 + 1) / 3, (0.5 + 1 + 0.5) / 3
    f1 = (0.5 + 2 * (2 / 3) / (2 / 3 + 1) + 2 * 0.5 / 1.5) / 3
    assert m == pytest.approx({"accuracy": 4 / 6, "precision": p, "recall": r, "f1": f1})
    assert all(type(v) is float for v in m.values())
    # an absent class counts as zero (zero_division=0) when listed in labels
    assert classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 1]), labels=[0, 1, 2])["f1"] == \
        pytest.approx(2 / 3)
    with pytest.raises(DataError, match="3 labels but y_pred has 2"):
        classification_metrics([0, 1, 2], [0, 1])
    with pytest.raises(DataError, match="empty"):
        classification_metrics([], [])


def test_top_k_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.3, 0.2, 0.5]])
    y = [2, 1, 2, 1]
    assert top_k_accuracy(y, scores, k=1) == pytest.approx(1 / 4)
    assert top_k_accuracy(y, scores, k=2) == pytest.approx(3 / 4)
    assert top_k_accuracy(y, torch.tensor(scores), k=3) == 1.0
    assert top_k_accuracy([1, 0], np.array([[0.2, 0.8], [0.9, 0.1]]), k=1) == 1.0  # two classes
    assert top_k_accuracy([0, 0], np.array([[0.1, 0.2, 0.7], [0.9, 0.0, 0.1]]), k=1) == 0.5  # classes absent from y
    with pytest.raises(DataError, match="scores must have shape"):
        top_k_accuracy([0, 1], scores, k=1)


def test_confusion_matrix_png_and_report(tmp_path):
    path = confusion_matrix_png([0, 1, 2, 2], [0, 2, 2, 2], ["cat", "dog", "bird"], tmp_path / "cm.png",
                                title="valid")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]
    text = classification_report_text([0, 1, 2, 2], [0, 2, 2, 2], ["cat", "dog", "bird"])
    assert "dog" in text and "macro avg" in text and "0.8000" in text  # bird: P=2/3, R=1 -> F1=0.8
