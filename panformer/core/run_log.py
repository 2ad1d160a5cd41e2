"""Training logs: ``log.csv``, TensorBoard events and a ``curves.png`` summary.

``log.csv`` has the columns ``step, epoch, split, lr`` followed by every metric key in order of first
appearance; when a new key appears the whole file is rewritten (atomically) with the wider header.
"""
from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import atomic_path, atomic_write_text

__all__ = ["RunLogger"]

_BASE = ["step", "epoch", "split", "lr"]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _parse(v: str) -> Any:
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


class RunLogger:
    """Rows of ``{step, epoch, split, lr, **metrics}`` to ``run_dir/log.csv`` and TensorBoard.

    ``enabled=False`` (non-main DDP ranks) makes every method a no-op. ``resume=False`` starts a
    fresh log (previous rows and TensorBoard events in ``run_dir`` are discarded); with
    ``resume=True`` the existing rows are read back, then trimmed by :meth:`load_state_dict`.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, resume: bool = False,
                 tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / "log.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = list(_BASE)
        self._tensorboard = tensorboard
        self._writer: Any = None
        self._purge_step: int | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or _BASE)
                self.rows = [{k: _parse(v) for k, v in r.items() if v not in ("", None)} for r in reader]
        elif not resume:
            self.csv_path.unlink(missing_ok=True)
            tb = self.run_dir / "tensorboard"
            for old in tb.glob("events.out.tfevents.*") if tb.is_dir() else ():
                old.unlink(missing_ok=True)

    # --- state for exact resumption -------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"n_rows": len(self.rows)}

    def load_state_dict(self, state: Mapping[str, int], step: int | None = None) -> None:
        """Drop rows logged after the checkpoint was taken; TensorBoard purges events after ``step``."""
        if not self.enabled:
            return
        n = int(state.get("n_rows", len(self.rows)))
        if n < len(self.rows):
            self.rows = self.rows[:n]
            self._rewrite()
        self._purge_step = None if step is None else step + 1

    # --- writing -------------------------------------------------------------------------------
    def log(self, step: int, epoch: float, split: str, lr: float | None = None, **metrics: float) -> None:
        """Append one row; ``metrics`` values must be numbers (``None`` is written as empty)."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": int(step), "epoch": round(float(epoch), 4), "split": split}
        if lr is not None:
            row["lr"] = float(lr)
        row.update({k: float(v) for k, v in metrics.items() if v is not None})
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or not self.csv_path.is_file():
            self.columns += new
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self.columns).writerow({k: _fmt(row.get(k)) for k in self.columns})
        self._log_tensorboard(row)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k)) for k in self.columns})
        atomic_write_text(self.csv_path, buf.getvalue())

    def _log_tensorboard(self, row: dict[str, Any]) -> None:
        if not self._tensorboard:
            return
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as e:  # tensorboard missing or broken: keep the CSV only
                print(f"warning: TensorBoard logging disabled ({e})", file=sys.stderr)
                self._tensorboard = False
                return
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self._purge_step)
        for k, v in row.items():
            if k not in ("step", "epoch", "split") and isinstance(v, float) and math.isfinite(v):
                self._writer.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # --- plots ---------------------------------------------------------------------------------
    def plot_curves(self, path: str | Path | None = None, loss_key: str = "loss") -> Path | None:
        """Write ``curves.png``: training ``loss_key`` vs step, then one panel per validation metric.

        Returns the path, or None when disabled or there is nothing to plot.
        """
        if not self.enabled:
            return None
        train = [r for r in self.rows if r.get("split") == "train" and loss_key in r]
        valid = [r for r in self.rows if r.get("split") == "valid"]
        valid_keys = [k for k in self.columns if k not in _BASE and any(k in r for r in valid)]
        panels: list[tuple[str, str, list[dict[str, Any]]]] = []
        if train:
            panels.append((f"train {loss_key}", loss_key, train))
        panels += [(f"valid {k}", k, valid) for k in valid_keys]
        if not panels:
            return None
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (title, key, rows) in zip(axes, panels):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, ms=3)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in axes[len(panels):]:
            ax.axis("off")
        out = Path(path) if path is not None else self.run_dir / "curves.png"
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close("all")
        return out
