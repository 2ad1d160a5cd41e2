"""image-generation: shapes, bits/dim against references, learning on digits, cached = uncached decoding,
the ViT judge and its cache, the grid PNG, custom image folders and one-line errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from panformer.core import TransformerConfig
from panformer.core.runtime import seed_everything
from panformer.tasks.cli import load_run, main
from panformer.tasks.image_generation import PixelLM, nll_per_dim, sample_pixels
from panformer.tasks.image_generation.data import dequantise, quantise, to_pixels
from panformer.tasks.image_generation.model import sequences
from panformer.tasks.vit import digits


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_lm(levels: int = 17, classes: int = 10, side: int = 8, seed: int = 0) -> PixelLM:
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64, dropout=0.0, activation="gelu", norm_first=True,
                            max_len=side * side, positional="learned")
    return PixelLM(cfg, levels, classes).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imggen") / "run"
    assert main(["train", "image-generation", "--quick", "--max-steps", "150", "--eval-every", "50", "--progress", "false",
                 "--out", str(out)]) == 0
    return out


# -- pieces -------------------------------------------------------------------------------------------
def test_quantisation_and_shapes():
    src = digits(1)
    img = src.load(5)  # uint8 (1, 8, 8), values round(v * 255 / 16)
    px = to_pixels(img, 8, 17)
    assert px.shape == (64,) and px.dtype == torch.long
    from sklearn.datasets import load_digits

    assert torch.equal(px, torch.from_numpy(load_digits().images[5].astype(np.int64)).flatten())  # 17 levels: lossless
    assert torch.equal(dequantise(px.view(8, 8), 17), img[0])
    big = torch.randint(0, 256, (1, 30, 20), dtype=torch.uint8)
    p4 = to_pixels(big, 8, 4)
    assert p4.shape == (64,) and int(p4.min()) >= 0 and int(p4.max()) <= 3
    assert torch.equal(quantise(torch.tensor([0, 42, 43, 128, 255], dtype=torch.uint8), 4), torch.tensor([0, 0, 1, 2, 3]))

    model = tiny_lm()
    ids = sequences(torch.randint(0, 17, (3, 64)), torch.tensor([0, 4, 9]), 17)
    assert ids.shape == (3, 65) and ids[:, 0].tolist() == [17, 21, 26]
    assert model(ids[:, :-1]).shape == (3, 64, 17)  # logits over the 17 pixel levels only
    state = model.init_decode_state(3)
    assert model.decode_step(ids[:, :5], state).shape == (3, 17)


def test_bits_per_dim_of_uniform_and_reference_models():
    pixels, labels = torch.randint(0, 16, (5, 64)), torch.randint(0, 3, (5,))
    uniform = tiny_lm(levels=16, classes=3)
    with torch.no_grad():
        uniform.lm.embed.weight.zero_()  # tied output: every logit 0 -> uniform over the 16 levels
    nll = nll_per_dim(uniform, pixels, labels, batch_size=2)
    assert nll == pytest.approx(math.log(16), abs=1e-6) and nll / math.log(2) == pytest.approx(4.0, abs=1e-6)

    model = tiny_lm(levels=16, classes=3, seed=1)
    ref = 0.0  # chain rule, one position at a time through the uncached decoding step
    with torch.no_grad():
        for i in range(5):
            ids = sequences(pixels[i : i + 1], labels[i : i + 1], 16)
            for t in range(64):
                logp = F.log_softmax(model.decode_step(ids[:, : t + 1], model.init_decode_state(1, use_cache=False)), -1)
                ref -= float(logp[0, ids[0, t + 1]])
    assert nll_per_dim(model, pixels, labels, batch_size=3) == pytest.approx(ref / (5 * 64), rel=1e-5)


# -- a short run on the built-in digits ---------------------------------------------------------------
def test_learns_digits_and_writes_metrics(run):
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == "test" and m["images"] == 450
    assert m["bits_per_dim"] == pytest.approx(m["loss"] / math.log(2))
    task, model = load_run(run, "cpu")
    task.load_data()
    seed_everything(0)
    start = nll_per_dim(task.build_model().eval(), task.splits["test"].pixels, task.splits["test"].labels)
    assert start == pytest.approx(math.log(17), abs=0.15)  # an untrained model is close to uniform
    assert m["loss"] < start - 1.0, m  # 150 steps clearly beat the start (and the 2.83-nat uniform model)
    assert 0.0 <= m["class_accuracy"] <= 1.0 and m["samples_per_class"] == 4
    assert set(m["class_accuracy_per_class"]) == {str(d) for d in range(10)}
    assert m["judge"] == str(run / "judge") and (run / "judge" / "model.safetensors").is_file()
    assert m["judge_accuracy"] > 0.2  # 60 judge steps: far from perfect, but well above chance (0.1)
    with Image.open(run / "samples.png") as im:  # rows = classes, 4 samples each
        assert im.mode == "L" and im.height > 10 * 40 and im.width > 4 * 40


def test_cached_and_uncached_generation_identical(run):
    _, model = load_run(run, "cpu")
    labels = torch.arange(10)
    a = sample_pixels(model, labels, 64, "greedy", use_cache=True)
    b = sample_pixels(model, labels, 64, "greedy", use_cache=False)
    assert a.shape == (10, 64) and torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # the class token changes the image
    s1 = sample_pixels(model, labels, 64, "sample", 0.9, generator=torch.Generator().manual_seed(3), use_cache=True)
    s2 = sample_pixels(model, labels, 64, "sample", 0.9, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(s1, s2) and int(s1.max()) < 17


def test_predict_writes_grid(run, tmp_path, capsys):
    png = tmp_path / "g.png"
    assert main(["predict", "image-generation", "--run", str(run), "--classes", "3", "7", "--num-samples", "8",
                 "--output", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"grid": str(png), "classes": ["3", "7"], "num_samples": 8}
    with Image.open(png) as im:
        two_rows, eight_cols = im.size[1], im.size[0]
    assert main(["predict", "image-generation", "--run", str(run), "5", "--num-samples", "2", "--output", str(png)]) == 0
    capsys.readouterr()
    with Image.open(png) as im:
        assert im.size[1] < two_rows and im.size[0] < eight_cols
    assert main(["predict", "image-generation", "--run", str(run), "--classes", "x"]) == 2
    assert "unknown class" in capsys.readouterr().err


def test_evaluate_reuses_judge_and_accepts_one(run, tmp_path, capsys):
    judge = run / "judge" / "model.safetensors"
    before = judge.stat().st_mtime_ns
    first = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "image-generation", "--run", str(run)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert judge.stat().st_mtime_ns == before  # the cached judge, not a new one
    for k in ("loss", "class_accuracy", "judge_accuracy"):
        assert m[k] == pytest.approx(first[k], abs=1e-6)  # same seed, same samples, same judge
    assert main(["evaluate", "image-generation", "--run", str(run), "--judge", str(run / "judge"), "--split", "valid",
                 "--out", str(tmp_path / "ev")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["images"] == 135 and m["judge"] == str(run / "judge") and (tmp_path / "ev" / "samples.png").is_file()
    assert main(["evaluate", "image-generation", "--run", str(run), "--judge", str(run)]) == 2
    assert "not a vit run" in capsys.readouterr().err


# -- custom data and errors ---------------------------------------------------------------------------
def _folder(root: Path, per_class: int = 12, size: int = 24) -> Path:
    src = digits(1)
    for d in (0, 1, 7):
        (root / f"d{d}").mkdir(parents=True)
        idx = [i for i, y in enumerate(src.labels) if y == d][:per_class]
        for j, i in enumerate(idx):
            Image.fromarray(src.load(i)[0].numpy()).resize((size, size)).save(root / f"d{d}" / f"{j}.png")
    return root


def test_image_folder_resized_and_quantised(tmp_path):
    data = _folder(tmp_path / "imgs")
    out = tmp_path / "run"
    assert main(["train", "image-generation", "--quick", "--data", str(data), "--image-size", "6", "--levels", "4",
                 "--valid-fraction", "0.2", "--test-fraction", "0.2", "--max-steps", "5", "--judge-steps", "4",
                 "--eval-samples-per-class", "2", "--progress", "false", "--out", str(out)]) == 0
    spec = json.loads((out / "assets" / "model.json").read_text())
    assert spec["levels"] == 4 and spec["image_size"] == 6 and spec["classes"] == ["d0", "d1", "d7"]
    assert spec["config"]["max_len"] == 36
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 7 and 0 < m["bits_per_dim"] < 3 and set(m["class_accuracy_per_class"]) == {"d0", "d1", "d7"}


def test_bad_inputs_give_one_line_errors(tmp_path, train_error):
    (tmp_path / "empty").mkdir()
    assert "no class subfolders" in train_error("image-generation", "--data", str(tmp_path / "empty"))
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    assert "hold no images" in train_error("image-generation", "--data", str(tmp_path / "hollow"))
    data = _folder(tmp_path / "broken", per_class=3)
    (data / "d1" / "bad.png").write_bytes(b"not a png at all")
    err = train_error("image-generation", "--data", str(data))
    assert "cannot decode image" in err and "bad.png" in err
    assert "not found" in train_error("image-generation", "--data", str(tmp_path / "missing"))
    assert "--levels" in train_error("image-generation", "--levels", "1")
    assert "--image-size" in train_error("image-generation", "--image-size", "0")
    assert "expected a run directory of `panformer train vit`" in train_error("image-generation", "--judge", str(tmp_path))
