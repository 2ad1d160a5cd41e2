"""Rendering of ``panformer compare`` results: a Markdown table and a self-contained HTML page.

Both render the ``results`` dict that ``compare`` writes as results.json: ``{"command", "quick",
"data_root", "started", "total_time_s", "machine", "rows": [row, ...]}`` where a row has ``task, model,
kind, name, status, error, dataset, metrics {name: value|None}, num_params, train_time_s,
examples_per_s, peak_memory_mb, wall_time_s, run_dir, images`` (paths relative to the output folder).
The HTML page embeds every picture as a base64 ``data:`` URI, so it can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from panformer.core.trainer import lower_is_better

__all__ = ["fmt_metric", "fmt_row", "collect_images", "summarize", "render_markdown", "render_html", "COLUMNS"]

MAX_IMAGES = 8  # per run directory: curves.png, then the task's own pictures
COLUMNS = ("task", "model", "dataset", "metrics", "params", "train time", "throughput", "peak memory", "run time",
           "status")
KIND_LABEL = {"transformer": "Transformer", "neural": "neural baseline", "classical": "classical baseline"}


def fmt_metric(v: Any) -> str:
    """0.53737 -> '0.5374'; 35.123 -> '35.12'; 12345.6 -> '12,346'; None -> '—'."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    a = abs(v)
    return f"{v:.4f}" if a < 10 else f"{v:.2f}" if a < 1000 else f"{v:,.0f}"


def metric_label(name: str) -> str:
    """'wer' -> 'wer↓', 'accuracy' -> 'accuracy↑' (which way is better)."""
    return name + ("↓" if lower_is_better(name) else "↑")  # the Trainer's rule picks checkpoints the same way


def fmt_row(row: dict[str, Any]) -> dict[str, str]:
    """The table cells of one row (same text in Markdown and HTML)."""
    def num(v: Any, fmt: str, unit: str = "") -> str:
        return "—" if v is None else format(v, fmt) + unit

    metrics = ", ".join(f"{metric_label(k)} {fmt_metric(v)}" for k, v in (row.get("metrics") or {}).items())
    status = "ok" if row.get("status") == "ok" else f"FAILED: {row.get('error') or 'unknown error'}"
    model = row.get("model") or ""
    return {"task": row.get("task", ""), "model": f"{model} ({KIND_LABEL.get(row.get('kind'), row.get('kind'))})"
            if model != "transformer" else "Transformer",
            "dataset": row.get("dataset") or "—", "metrics": metrics or "—",
            "params": num(row.get("num_params"), ","), "train time": num(row.get("train_time_s"), ".1f", " s"),
            "throughput": num(row.get("examples_per_s"), ",.0f", " ex/s"),
            "peak memory": num(row.get("peak_memory_mb"), ",.0f", " MiB"),
            "run time": num(row.get("wall_time_s"), ".1f", " s"), "status": status}


def _is_rate(name: str, values: list[float]) -> bool:
    """Accuracy-like metrics in [0, 1] differ by percentage points; others (perplexity, bits, BLEU) by value."""
    return all(0.0 <= v <= 1.0 for v in values) and not any(t in name for t in ("perplexity", "bits", "loss", "l1"))


def _by_how_much(name: str, winner: float, loser: float) -> str:
    """'2.3 points' for rates; else the difference and its size relative to the winner's value."""
    d = abs(winner - loser)
    if _is_rate(name, [winner, loser]):
        return f"{100 * d:.1f} points"
    return f"{fmt_metric(d)}" + (f" ({100 * d / abs(winner):.0f} %)" if winner else "")


def _task_verdict(task: str, rows: list[dict[str, Any]], notes: dict[str, str], quick: bool) -> str:
    """One sentence: who won this task on its first report metric, and by how much."""
    tr = next((r for r in rows if r["kind"] == "transformer"), None)
    if tr is None or tr["status"] != "ok":
        error = (tr or {}).get("error") or "no run"
        return f"{task}: the Transformer run failed ({error})."
    name = next((k for k, v in tr["metrics"].items() if v is not None), None)
    if name is None:
        return f"{task}: the Transformer run reported none of its metrics."
    tv = tr["metrics"][name]
    rest = [f"{k} {fmt_metric(v)}" for k, v in tr["metrics"].items() if k != name and v is not None]
    others = [r for r in rows if r["kind"] != "transformer" and r["status"] == "ok"
              and (r.get("metrics") or {}).get(name) is not None]
    if not others:
        return (f"{task}: the Transformer alone (no baseline for this task): {name} {fmt_metric(tv)}"
                + (f", {', '.join(rest)}" if rest else "") + ".")
    lower = lower_is_better(name)
    best = min(others, key=lambda r: r["metrics"][name] * (1 if lower else -1))
    bv = best["metrics"][name]
    who = f"{best['model']} ({KIND_LABEL.get(best['kind'], best['kind'])})"
    if fmt_metric(tv) == fmt_metric(bv):  # equal as far as the table shows them
        return f"{task}: the Transformer ties with {who} on {name}, {fmt_metric(tv)} each."
    if (tv <= bv) if lower else (tv >= bv):
        n = len(others)
        return (f"{task}: the Transformer wins on {name}, {fmt_metric(tv)} against {fmt_metric(bv)} for the best of "
                f"{n} baseline{'s' if n > 1 else ''}, {who}: by {_by_how_much(name, tv, bv)}.")
    text = (f"{task}: {who} wins on {name}, {fmt_metric(bv)} against the Transformer's {fmt_metric(tv)}: by "
            f"{_by_how_much(name, bv, tv)}.")
    note = notes.get(task) if quick else None
    return text + (f" {note}" if note else "")


def summarize(results: dict[str, Any], notes: dict[str, str] | None = None) -> dict[str, Any]:
    """The report's words: ``{"intro": paragraph, "tasks": {task: sentence}}``, every number taken from
    ``results["rows"]`` (so the text always says what the table says). ``notes``: per task, a sentence for a
    quick run that a baseline won (where the full run stands, in BENCHMARKS.md)."""
    rows = results.get("rows", [])
    tasks = list(dict.fromkeys([*results.get("tasks", []), *(r["task"] for r in rows)]))
    by_task = {t: [r for r in rows if r["task"] == t] for t in tasks}
    lines = {t: _task_verdict(t, by_task[t], notes or {}, bool(results.get("quick"))) for t in tasks if by_task[t]}
    runs = [r for r in rows if r["kind"] != "classical"]
    m = results.get("machine") or {}
    kind = ("A quick comparison (--quick: small models, each trained for a fixed wall-clock budget of well under a "
            "minute, so these numbers show each Transformer learning, not how far it gets)"
            if results.get("quick") else "A full comparison (each recipe's own settings and time budget)")
    data = f"the datasets under {results['data_root']} where a task has one" if results.get("data_root") \
        else "built-in data"
    jobs = results.get("jobs") or 1
    intro = (f"{kind} of {len(tasks)} task{'s' if len(tasks) != 1 else ''} on {data}: {len(runs)} training runs "
             f"in {(results.get('total_time_s') or 0) / 60:.1f} minutes on {m.get('cpus', '?')} CPU cores"
             f"{f', {jobs} at a time' if jobs > 1 else ''}.")
    judged = [t for t in tasks if any(r["kind"] != "transformer" for r in by_task[t])]
    won = [t for t in judged if " the Transformer wins " in lines.get(t, "")]
    tied = [t for t in judged if " the Transformer ties " in lines.get(t, "")]
    if judged:
        intro += (f" The Transformer won {len(won)}" + (f" and tied {len(tied)}" if tied else "")
                  + f" of the {len(judged)} tasks that have a baseline")
        lost = [t for t in judged if t not in won and t not in tied]
        intro += f"; {', '.join(lost)} went to a baseline." if lost else "."
    return {"intro": intro, "tasks": lines}


def collect_images(out: Path, run_dir: Path, limit: int = MAX_IMAGES) -> list[str]:
    """PNG files of a run directory (curves first, then top level, then sub-folders), relative to ``out``."""
    if not run_dir.is_dir():
        return []
    skip = {"tensorboard", "checkpoint", "assets"}
    pngs = [p for p in run_dir.rglob("*.png") if not skip & set(p.relative_to(run_dir).parts[:-1])]
    pngs.sort(key=lambda p: (p.name != "curves.png", len(p.relative_to(run_dir).parts), str(p)))
    return [p.relative_to(out).as_posix() for p in pngs[:limit]]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict[str, Any]) -> str:
    rows = results.get("rows", [])
    lines = ["# panformer compare", "",
             f"`{results.get('command', '')}` — started {results.get('started', '?')}, "
             f"{'--quick (small models, fixed time budgets)' if results.get('quick') else 'full recipes'}, "
             f"data: {results.get('data_root') or 'built-in'}, total {fmt_metric(results.get('total_time_s'))} s.", ""]
    summary = results.get("summary") or summarize(results)
    lines += [summary["intro"], ""] + [f"- {text}" for text in summary["tasks"].values()] + [""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = fmt_row(row)
        lines.append("| " + " | ".join(_md_cell(cells[c]) for c in COLUMNS) + " |")
    lines += ["", "Metrics are on each run's test split (↑ higher is better, ↓ lower). Train time and throughput "
              "(training examples per second) come from the Trainer; peak memory is the run's maximum resident set "
              "size; run time includes data loading, evaluation and the classical baseline.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        images = [(r["model"], p) for r in rows if r["task"] == task for p in r.get("images", [])]
        if images:
            lines += [f"## {task}", ""] + [f"![{task} {model}: {p}]({p})" for model, p in images] + [""]
    m = results.get("machine") or {}
    lines.append(f"Machine: {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, torch {m.get('torch', '?')}, "
                 f"{m.get('platform', '?')}.")
    return "\n".join(lines) + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr.neural td,tr.classical td{color:#555;background:#fafafa}tr.failed td{background:#fde8e8}
td.num{text-align:right;white-space:nowrap}figure{display:inline-block;margin:6px;vertical-align:top}
figure img{max-width:440px;max-height:360px;border:1px solid #ddd}figcaption{font-size:12px;color:#666}"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_summary(summary: dict[str, Any]) -> str:
    e = html.escape
    items = "".join(f"<li>{e(text)}</li>" for text in summary["tasks"].values())
    return f"<div id='verdict'><p>{e(summary['intro'])}</p><ul>{items}</ul></div>"


def render_html(results: dict[str, Any], out: Path) -> str:
    """A self-contained page: summary table, then per task the pictures of each of its runs."""
    e = html.escape
    rows = results.get("rows", [])
    numeric = {"params", "train time", "throughput", "peak memory", "run time"}
    body = [f"<h1>panformer compare</h1><p><code>{e(results.get('command', ''))}</code> — started "
            f"{e(str(results.get('started', '?')))}; {'--quick' if results.get('quick') else 'full recipes'}; data: "
            f"{e(str(results.get('data_root') or 'built-in'))}; "
            f"total {e(fmt_metric(results.get('total_time_s')))} s.</p>",
            _html_summary(results.get("summary") or summarize(results)),
            "<table id='summary'><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>"]
    for row in rows:
        cells = fmt_row(row)
        cls = "failed" if row.get("status") != "ok" else row.get("kind", "")
        body.append(f"<tr class='{e(cls)}'>" + "".join(
            f"<td{' class=num' if c in numeric else ''}>{e(cells[c])}</td>" for c in COLUMNS) + "</tr>")
    body.append("</tbody></table><p>Metrics on each run's test split (↑ higher is better, ↓ lower). Throughput: "
                "training examples per second. Peak memory: the run's maximum resident set size. Run time includes "
                "data loading, evaluation and the classical baseline.</p>")
    for task in dict.fromkeys(r["task"] for r in rows):
        runs = []
        for r in rows:
            figs = [f"<figure><img src='{_data_uri(out / rel)}' alt='{e(rel)}'>"
                    f"<figcaption>{e(rel)}</figcaption></figure>"
                    for rel in r.get("images", []) if r["task"] == task and (out / rel).is_file()]
            if figs:
                runs.append(f"<h3>{e(fmt_row(r)['model'])}</h3>" + "".join(figs))
        if runs:
            body.append(f"<h2 id='{e(task)}'>{e(task)}</h2>" + "\n".join(runs))
    m = results.get("machine") or {}
    body.append(f"<p><small>Machine: {e(str(m.get('cpus', '?')))} CPUs, Python {e(str(m.get('python', '?')))}, "
                f"torch {e(str(m.get('torch', '?')))}, {e(str(m.get('platform', '?')))}.</small></p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>panformer compare</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
