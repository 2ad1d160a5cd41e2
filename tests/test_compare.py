"""`panformer compare`: one real (tiny) compare run checked against its runs' metrics.json, a failing task
reported while the others run, the results.json schema, bad options, and the HTML page in headless Chromium."""
import contextlib
import csv
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from panformer.tasks.builtin_data import movie_review_snippets
from panformer.tasks.compare import main as compare_main
from panformer.tasks.report import fmt_metric, summarize
from panformer.tasks.sentiment import SentimentTask

NEURAL = next(iter(getattr(SentimentTask, "baselines", None) or {}), None)  # e.g. "lstm"
ROW_KEYS = {"task", "model", "kind", "name", "status", "error", "exit_code", "dataset", "main_metric", "metrics",
            "split", "num_params", "train_time_s", "examples_per_s", "peak_memory_mb", "wall_time_s", "cpu_time_s",
            "run_dir", "images"}


def _write_sst2(folder, n_train=400, n_eval=100):
    """A tiny SST-2-shaped folder (label<TAB>sentence) cut from the built-in snippets."""
    texts, labels = movie_review_snippets()
    pairs = [(t, y) for t, y in zip(texts, labels) if "\t" not in t and '"' not in t][: n_train + 2 * n_eval]
    folder.mkdir(parents=True)
    for name, part in (("train", pairs[:n_train]), ("dev", pairs[n_train:n_train + n_eval]),
                       ("test", pairs[n_train + n_eval:])):
        with open(folder / f"{name}.tsv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["label", "sentence"])
            w.writerows([y, t] for t, y in part)


def _compare(*args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = compare_main([str(a) for a in args])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """sentiment (+ its classical and first neural baseline) on a data root holding only sst2/, and
    recommendation, whose sasrec/Video.txt is missing there: it must fail alone."""
    tmp = tmp_path_factory.mktemp("compare")
    _write_sst2(tmp / "data" / "sst2")
    out = tmp / "out"
    code, stdout = _compare("--quick", "--tasks", "sentiment,recommendation", "--data-root", tmp / "data",
                            "--max-steps", "20", "--baselines", ",".join(["classical", *([NEURAL] if NEURAL else [])]),
                            "--out", out)
    return code, stdout, out, json.loads((out / "results.json").read_text())


def test_report_numbers_equal_the_runs_metrics(report):
    code, _, out, results = report
    assert code == 0
    rows = {(r["task"], r["kind"]): r for r in results["rows"]}
    main = rows[("sentiment", "transformer")]
    assert main["status"] == "ok" and main["dataset"] == "sst2 (train.tsv)"  # the data root was used, not built-in data
    m = json.loads((out / main["run_dir"] / "metrics.json").read_text())
    assert main["metrics"] == {k: m[k] for k in SentimentTask.report_metrics}
    for key in ("num_params", "train_time_s", "examples_per_s", "split"):
        assert main[key] == m[key], key
    classical = rows[("sentiment", "classical")]
    assert classical["model"] == m["baseline"]["model"]
    assert classical["metrics"] == {k: m["baseline"][k] for k in SentimentTask.report_metrics}
    assert 50 < main["peak_memory_mb"] < 16000 and main["wall_time_s"] > main["train_time_s"]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (f"accuracy↑ {m['accuracy']:.4f}", f"f1↑ {m['f1']:.4f}", f"{m['num_params']:,}",
                 f"accuracy↑ {m['baseline']['accuracy']:.4f}", f"{main['peak_memory_mb']:,.0f} MiB"):
        assert text in md and text in html, text
    if NEURAL:
        neural = rows[("sentiment", "neural")]
        nm = json.loads((out / neural["run_dir"] / "metrics.json").read_text())
        assert neural["model"] == NEURAL and neural["run_dir"] == f"runs/sentiment-{NEURAL}"
        assert neural["metrics"] == {k: nm[k] for k in SentimentTask.report_metrics}
        assert "baseline" not in nm  # the classical baseline is fitted once, in the Transformer run
        assert nm["num_params"] != m["num_params"] and f"{nm['num_params']:,}" in md


def test_failing_task_is_reported_and_others_run(report):
    _, stdout, out, results = report
    rec = [r for r in results["rows"] if r["task"] == "recommendation"]
    assert len(rec) == 1 and rec[0]["status"] == "failed" and rec[0]["exit_code"] == 2
    assert "file not found" in rec[0]["error"] and "sasrec/Video.txt" in rec[0]["error"]
    assert rec[0]["run_dir"] is None and not (out / "runs" / "recommendation").exists()
    assert "FAILED: " + rec[0]["error"] in (out / "report.md").read_text()
    n = 2 + bool(NEURAL)
    # --quick runs several at a time (one per core): lines come in the order the runs end, each counted
    assert re.search(rf"\[\d/{n}\] sentiment \.\.\. done in \d+ s, accuracy \d\.\d{{4}}", stdout)
    assert re.search(rf"\[\d/{n}\] recommendation \.\.\. FAILED in \d+ s \(exit 2\): panformer: error:", stdout)
    assert sorted(int(k) for k in re.findall(rf"\[(\d)/{n}\]", stdout)) == list(range(1, n + 1))


def test_results_schema(report):
    _, _, out, results = report
    assert results["schema_version"] == 2 and results["quick"] is True and results["jobs"] >= 1
    assert results["tasks"] == ["sentiment", "recommendation"] and results["total_time_s"] > 0
    assert {"python", "torch", "cpus", "platform"} <= set(results["machine"])
    assert [r["kind"] for r in results["rows"]] == ["transformer", "classical", *(["neural"] if NEURAL else []),
                                                   "transformer"]
    for r in results["rows"]:
        assert set(r) == ROW_KEYS
        assert r["status"] in ("ok", "failed") and (r["error"] is None) == (r["status"] == "ok")
        assert all(isinstance(v, float) for v in r["metrics"].values()) or r["status"] == "failed"
        for img in r["images"]:
            assert (out / img).is_file() and img.startswith(r["run_dir"] + "/")
    main = results["rows"][0]
    assert main["images"][0] == "runs/sentiment/curves.png" and "runs/sentiment/confusion_matrix.png" in main["images"]
    assert "[panformer] sentiment on train.tsv" in (out / "logs" / "sentiment.stderr").read_text()


def _numbers(text):
    return re.findall(r"\d+(?:[.,]\d+)*", text)


def test_report_says_in_words_who_won_with_the_tables_numbers(report):
    _, _, out, results = report
    summary = results["summary"]
    assert summary["intro"].startswith("A quick comparison") and "built-in data" not in summary["intro"]
    assert f"{len([r for r in results['rows'] if r['kind'] != 'classical'])} training runs" in summary["intro"]
    assert f"in {results['total_time_s'] / 60:.1f} minutes" in summary["intro"]
    rows = [r for r in results["rows"] if r["task"] == "sentiment" and r["status"] == "ok"]
    tr = next(r for r in rows if r["kind"] == "transformer")
    best = max((r for r in rows if r["kind"] != "transformer"), key=lambda r: r["metrics"]["accuracy"])
    line = summary["tasks"]["sentiment"]
    t, b = fmt_metric(tr["metrics"]["accuracy"]), fmt_metric(best["metrics"]["accuracy"])
    assert t in _numbers(line) and b in _numbers(line) and best["model"] in line
    if t == b:  # a tie as far as the table shows
        assert line.startswith("sentiment: the Transformer ties with") and "0 and tied 1 of the 1 tasks" in summary["intro"]
    else:
        gap = f"{100 * abs(tr['metrics']['accuracy'] - best['metrics']['accuracy']):.1f} points"
        assert gap in line
        won = tr["metrics"]["accuracy"] > best["metrics"]["accuracy"]
        assert line.startswith("sentiment: the Transformer wins" if won else f"sentiment: {best['model']} (")
        assert ("1 of the 1 tasks" if won else "0 of the 1 tasks") in summary["intro"]
    assert "recommendation: the Transformer run failed" in summary["tasks"]["recommendation"]
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.index(summary["intro"]) < md.index("| task |")  # the words come first, then the table
    assert html.escape(line) in page and html.escape(summary["intro"]) in page


def test_verdicts_name_the_winner_and_the_margin():
    def row(task, model, kind, **metrics):
        return {"task": task, "model": model, "kind": kind, "status": "ok", "error": None, "metrics": metrics}
    results = {"quick": True, "tasks": ["a", "b", "c", "d"], "total_time_s": 90, "machine": {"cpus": 2}, "jobs": 2,
               "rows": [row("a", "transformer", "transformer", wer=0.25), row("a", "mfcc-svm", "classical", wer=0.5),
                        row("b", "transformer", "transformer", perplexity=12.0), row("b", "lstm", "neural", perplexity=8.0),
                        row("c", "transformer", "transformer", bleu=45.0, chrf=70.0),
                        row("d", "transformer", "transformer", accuracy=0.99111), row("d", "svc", "classical", accuracy=0.99109)]}
    s = summarize(results, {"b": "See BENCHMARKS.md."})
    assert s["tasks"]["a"] == ("a: the Transformer wins on wer, 0.2500 against 0.5000 for the best of 1 baseline, "
                               "mfcc-svm (classical baseline): by 25.0 points.")
    assert s["tasks"]["b"] == ("b: lstm (neural baseline) wins on perplexity, 8.0000 against the Transformer's 12.00: "
                               "by 4.0000 (50 %). See BENCHMARKS.md.")
    assert s["tasks"]["c"] == "c: the Transformer alone (no baseline for this task): bleu 45.00, chrf 70.00."
    assert s["tasks"]["d"] == "d: the Transformer ties with svc (classical baseline) on accuracy, 0.9911 each."
    assert "4 tasks on built-in data: 5 training runs in 1.5 minutes on 2 CPU cores, 2 at a time" in s["intro"]
    assert s["intro"].endswith("The Transformer won 1 and tied 1 of the 3 tasks that have a baseline; b went to a "
                               "baseline.")
    assert "See BENCHMARKS" not in summarize({**results, "quick": False}, {"b": "See BENCHMARKS.md."})["tasks"]["b"]


def test_all_tasks_failed_exits_1_and_bad_options_exit_2(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    code, stdout = _compare("--quick", "--tasks", "sentiment", "--baselines", "none", "--data-root",
                            tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 1 and "0/1 runs succeeded" in stdout
    row, = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert row["status"] == "failed" and "sst2/train.tsv" in row["error"]
    for args, message in ((["--tasks", "nosuch"], "unknown task(s) nosuch"),
                          (["--data-root", tmp_path / "nowhere"], "no such folder"),
                          (["--tasks", "sentiment", "--baselines", "nosuch"], "--baselines: nosuch"),
                          (["--max-steps", "0"], "--max-steps must be at least 1")):
        code, _, err = cli("compare", *args, "--out", tmp_path / "new")
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "new").exists()  # nothing written on bad options
    code, _, err = cli("compare", "--out", tmp_path / "out")  # the earlier compare's folder, without --overwrite
    assert code == 2 and "exists and is not empty; pass --overwrite" in err


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const d = document.createElement('div'); d.id = 'imgcheck';
  d.textContent = 'broken=' + imgs.filter(i => !i.complete || i.naturalWidth === 0).length + ' total=' + imgs.length;
  document.body.appendChild(d); });</script>"""


def _chromium_check(page, tmp_path, name):
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    copy = tmp_path / name
    copy.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", copy.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"broken=(\d+) total=(\d+)", dom)
    assert found, dom[-2000:]
    return int(found.group(1)), int(found.group(2))


def test_html_renders_in_chromium_with_no_missing_images(report, tmp_path):
    _, _, out, results = report
    page = (out / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    n_images = sum(len(r["images"]) for r in results["rows"])
    assert n_images >= 2 and len(parser.srcs) == n_images
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs)  # self-contained
    # the check itself must be able to fail: one broken picture added to a copy is counted
    broken_page = page.replace("</body>", "<img src='data:image/png;base64,AAAA' alt='broken'></body>")
    assert _chromium_check(page, tmp_path, "report.html") == (0, n_images)
    assert _chromium_check(broken_page, tmp_path, "broken.html") == (1, n_images + 1)


def test_parallel_plan_waits_for_judges_and_starts_long_runs_first(tmp_path):
    from panformer.tasks import get_task
    from panformer.tasks.compare import _next_ready, _start_order, plan_runs

    specs = [s for t in ("tts", "speech", "image-generation", "vit")
             for s in plan_runs(t, get_task(t), ["--quick"], None, quick=True)]
    judge = {s.name: s.judge for s in specs}
    assert judge["tts"] == "speech" and judge["image-generation"] == "vit" and judge["speech"] is None
    order = _start_order(specs)
    assert {s.name for s in order[:2]} == {"speech", "vit"}  # the judges go first
    rest = [s.budget_s for s in order[2:]]
    assert rest == sorted(rest, reverse=True) and all(s.budget_s > 0 for s in specs)  # quick runs have budgets
    pending = [s for s in order if s.name in ("tts", "speech")]
    assert _next_ready(pending, []).name == "speech"
    tts = [s for s in pending if s.name == "tts"]
    assert _next_ready(tts, []).name == "tts"  # its judge is done (or failed): no reason to wait
    running = [type("C", (), {"spec": pending[0] if pending[0].name == "speech" else pending[1]})()]
    assert _next_ready(tts, running) is None  # ... but while it runs, tts waits
