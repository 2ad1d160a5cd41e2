"""The ``vit`` task: torchvision equivalence, model pieces, data sources, learning and clear errors."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import vit_b_16
from torchvision.models.vision_transformer import VisionTransformer as TVViT
from torchvision.models.vision_transformer import interpolate_embeddings

from panformer.core.errors import ConfigError, DataError
from panformer.core.models import count_parameters
from panformer.tasks.cli import main
from panformer.tasks.vit import (ViTConfig, VisionTransformer, attention_rollout, digits, digits_split, from_torchvision,
                       interpolate_pos_embed, open_source)

VIT_B_16_PARAMS = 86_567_656


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (torchvision zero-inits the head and the class token)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _small_tv(**kw) -> TVViT:
    torch.manual_seed(0)
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)
    return _randomize(TVViT(**{**cfg, **kw}))


# -- torchvision import -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"representation_size": 48}, {"num_layers": 3, "num_heads": 2, "image_size": 48, "patch_size": 16}])
def test_from_torchvision_matches_small_models(kw):
    tv = _small_tv(**kw)
    ours = from_torchvision(tv)
    assert count_parameters(ours) == sum(p.numel() for p in tv.parameters())
    x = torch.randn(3, 3, tv.image_size, tv.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.double()(x.double()), tv.double()(x.double()), atol=1e-10, rtol=1e-10)


def test_from_torchvision_state_dict_and_file(tmp_path):
    tv = _small_tv()
    path = tmp_path / "vit.pth"
    torch.save(tv.state_dict(), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = tv(x)
        for src in (tv.state_dict(), path, str(path)):
            torch.testing.assert_close(from_torchvision(src, n_heads=4)(x), ref, atol=1e-5, rtol=1e-5)
        # old torchvision names (mlp.linear_1 / mlp.linear_2) are accepted too
        old = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v for k, v in tv.state_dict().items()}
        torch.testing.assert_close(from_torchvision(old, n_heads=4)(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="conv_proj"):
        from_torchvision({"foo": torch.zeros(1)})
    with pytest.raises(ConfigError, match="not found"):
        from_torchvision(tmp_path / "missing.pth")


def test_vit_b_16_parameters_and_logits():
    torch.manual_seed(0)
    tv = _randomize(vit_b_16(weights=None))
    assert sum(p.numel() for p in tv.parameters()) == VIT_B_16_PARAMS
    ours = from_torchvision(tv)
    assert count_parameters(ours) == VIT_B_16_PARAMS
    assert count_parameters(VisionTransformer(ViTConfig())) == VIT_B_16_PARAMS  # our ViT-B/16 defaults
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    assert out.shape == (1, 1000) and ref.abs().max() > 0.1  # non-trivial logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)


def test_position_interpolation_matches_torchvision():
    tv = _small_tv()
    ours = from_torchvision(tv)
    ref = interpolate_embeddings(64, 8, tv.state_dict())["encoder.pos_embedding"]  # 4x4 -> 8x8 grid
    torch.testing.assert_close(interpolate_pos_embed(ours.pos_embed, (8, 8)), ref)
    with torch.no_grad():  # any divisible size runs; the native size leaves the table untouched
        assert ours(torch.randn(2, 3, 64, 48)).shape == (2, 10)
    assert interpolate_pos_embed(ours.pos_embed, (4, 4)) is ours.pos_embed
    with pytest.raises(ValueError, match="not divisible"):
        ours(torch.randn(1, 3, 30, 32))
    with pytest.raises(ConfigError, match="divisible"):
        ViTConfig(image_size=30, patch_size=8)


def test_attention_maps_and_rollout():
    model = VisionTransformer(ViTConfig(image_size=16, patch_size=4, in_channels=1, num_classes=3, d_model=32,
                                        n_heads=2, n_layers=3, d_ff=64)).eval()
    logits, maps = model(torch.randn(2, 1, 16, 16), output_attentions=True)
    assert logits.shape == (2, 3) and len(maps) == 3
    assert maps[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 2, 17))
    heat = attention_rollout(maps)
    assert heat.shape == (2, 16) and torch.allclose(heat.amax(-1), torch.ones(2))
    # one layer of uniform attention: every patch receives the same share
    uniform = torch.full((1, 2, 5, 5), 0.2)
    torch.testing.assert_close(attention_rollout([uniform]), torch.ones(1, 4))
    # a layer where [CLS] attends only to patch 2 (index 3): rollout = 0.5 I + 0.5 A, CLS row -> patch 2
    a = torch.zeros(1, 1, 5, 5)
    a[..., 0, 3] = 1.0
    a[..., 1:, 1:] = torch.eye(4)
    expected = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(attention_rollout([a]), expected)


# -- data -------------------------------------------------------------------------------------------
def test_digits_split_is_the_fixed_guide_split():
    src = digits()
    assert len(src) == 1797 and src.load(0).shape == (1, 8, 8) and src.load(0).dtype == torch.uint8
    tr, va, te = digits_split(src.labels, 0.1, seed=0)
    assert (len(tr), len(va), len(te)) == (1212, 135, 450)
    assert not set(tr) & set(te) and not set(va) & set(te) and not set(tr) & set(va)
    assert digits_split(src.labels, 0.1, seed=5)[2] == te  # the test split never moves
    y = np.asarray(src.labels)
    assert np.abs(np.bincount(y[te]) - 0.25 * np.bincount(y)).max() <= 1  # stratified


def _digit_png(path: Path, k: int, size: int = 16) -> None:
    img = digits().load(k)[0].numpy()
    Image.fromarray(img).resize((size, size), Image.NEAREST).convert("RGB").save(path)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    """An imagefolder tree of 3 digit classes (24 PNGs each) and a CSV listing the same files."""
    root = tmp_path_factory.mktemp("imgs")
    labels = np.asarray(digits().labels)
    rows = ["path,label"]
    for c in (0, 1, 7):
        (root / "folder" / f"d{c}").mkdir(parents=True)
        for j, k in enumerate(np.flatnonzero(labels == c)[:24]):
            _digit_png(root / "folder" / f"d{c}" / f"{j:02d}.png", int(k))
            rows.append(f"folder/d{c}/{j:02d}.png,d{c}")
    (root / "images.csv").write_text("\n".join(rows) + "\n")
    return root


def test_imagefolder_csv_and_hf_sources_agree(image_data, tmp_path):
    import datasets

    folder = open_source(str(image_data / "folder"), "--data", channels=3)
    table = open_source(str(image_data / "images.csv"), "--data", channels=3)
    assert len(folder) == len(table) == 72 and folder.labels == table.labels
    assert set(folder.labels) == {"d0", "d1", "d7"}
    assert torch.equal(folder.load(30), table.load(30)) and folder.load(30).shape == (3, 16, 16)
    assert open_source(str(image_data / "folder"), "--data", channels=1).load(0).shape == (1, 16, 16)
    names = ["d0", "d1", "d7"]
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"img": [str(p) for p in folder.paths],
                                     "label": [names.index(v) for v in folder.labels]}, features=feats)
    ds.save_to_disk(str(tmp_path / "hf"))
    hf = open_source(str(tmp_path / "hf"), "--data", channels=3)
    assert hf.labels == folder.labels and torch.equal(hf.load(5), folder.load(5))
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    pq = open_source(str(tmp_path / "hf.parquet"), "--data", channels=3)
    assert torch.equal(pq.load(40), folder.load(40))


def _idx(path: Path, arr: np.ndarray) -> None:
    code = 0x0800 + arr.ndim  # unsigned bytes, big-endian dims (the MNIST idx format)
    path.write_bytes(struct.pack(">I", code) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.astype(np.uint8).tobytes())


def test_torchvision_dataset_source(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = digits().images[:20, 0].repeat_interleave(3, 1).repeat_interleave(3, 2)  # (20, 24, 24)
    imgs = torch.nn.functional.pad(imgs, (2, 2, 2, 2)).numpy()  # (20, 28, 28)
    ys = np.asarray(digits().labels[:20])
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", imgs)
        _idx(raw / f"{split}-labels-idx1-ubyte", ys)
    src = open_source("torchvision:MNIST", "--data", channels=1, data_root=str(tmp_path))
    assert len(src) == 20 and src.labels[0] == "0 - zero" and src.load(3).shape == (1, 28, 28)
    assert torch.equal(src.load(3)[0], torch.from_numpy(imgs[3]))
    with pytest.raises(DataError, match="unknown torchvision dataset"):
        open_source("torchvision:NoSuchSet", "--data", channels=1)
    with pytest.raises(DataError, match="cannot open torchvision dataset CIFAR10"):
        open_source("torchvision:CIFAR10", "--data", channels=3, data_root=str(tmp_path))


# -- training, evaluation, prediction ---------------------------------------------------------------
def test_quick_run_on_digits_learns(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "vit", "--quick", "--max-steps", "120", "--eval-every", "60", "--out", str(out),
                 "--progress", "false"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "top5_accuracy", "loss"} <= set(m)
    assert m["split"] == "test" and m["accuracy"] > 0.5  # chance: 0.1
    assert (out / "confusion_matrix.png").is_file() and (out / "attention_rollout_0.png").is_file()


def test_imagefolder_train_evaluate_predict(image_data, tmp_path, capsys):
    out = tmp_path / "run"
    folder = image_data / "folder"
    argv = ["train", "vit", "--quick", "--data", str(folder), "--image-size", "16", "--patch-size", "4",
            "--max-steps", "4", "--augment", "crop-flip", "--out", str(out), "--progress", "false", "--valid-fraction", "0.2", "--test-fraction", "0.2"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1"} <= set(m) and "top5_accuracy" not in m  # 3 classes
    assert json.loads((out / "assets" / "labels.json").read_text()) == ["d0", "d1", "d7"]
    capsys.readouterr()
    assert main(["evaluate", "vit", "--run", str(out), "--data", str(image_data / "images.csv"), "--split", "test",
                 "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] >= 0
    assert (tmp_path / "ev" / "attention_rollout_1.png").is_file()
    capsys.readouterr()
    img = folder / "d7" / "00.png"
    assert main(["predict", "vit", "--run", str(out), str(img), str(folder / "d0" / "01.png")]) == 0
    preds = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(preds) == 2 and preds[0]["image"] == str(img) and preds[0]["label"] in ("d0", "d1", "d7")
    assert len(preds[0]["top5"]) == 3 and math.isclose(sum(p for _, p in preds[0]["top5"]), 1.0, abs_tol=1e-3)
    assert main(["predict", "vit", "--run", str(out), str(tmp_path / "nope.png")]) == 2
    assert "image file not found" in capsys.readouterr().err


def test_pretrained_torchvision_weights_are_loaded(tmp_path, image_data):
    from panformer.tasks.cli import resolve_train_args
    from panformer.tasks.vit import VitTask

    tv = _small_tv()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    args, _ = resolve_train_args(VitTask, ["--data", str(image_data / "folder"), "--pretrained", str(tmp_path / "tv.pth"),
                                           "--image-size", "64"])
    task = VitTask(args)
    task.load_data()
    task.fit_assets()
    model = task.build_model()
    task.load_pretrained(model)
    assert model.cfg.image_size == 64 and model.head.out_features == 3 and task.prep["mean"][0] == 0.485
    torch.testing.assert_close(model.patch_embed.proj.weight, tv.conv_proj.weight)
    torch.testing.assert_close(model.pos_embed, interpolate_embeddings(64, 8, tv.state_dict())["encoder.pos_embedding"])
    assert model.head.weight.abs().sum() == 0  # a new head for the 3 classes


# -- bad input --------------------------------------------------------------------------------------
def _fails(argv: list[str], out: Path, capsys, *needles: str) -> None:
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("panformer: error: ") and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    assert not out.exists()


def test_bad_input_gives_one_clear_line(image_data, tmp_path, capsys):
    out = tmp_path / "never"
    csv = tmp_path / "missing.csv"
    csv.write_text("path,label\nfolder/d0/00.png,d0\nno/such.png,d1\n")
    _fails(["train", "vit", "--data", str(csv), "--image-root", str(image_data)], out, capsys,
           "missing.csv", "row 2", "image file not found", "no/such.png")
    bad = tmp_path / "corrupt"
    for c in ("a", "b"):
        (bad / c).mkdir(parents=True)
        _digit_png(bad / c / "ok.png", 0)
    (bad / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    _fails(["train", "vit", "--data", str(bad)], out, capsys, "cannot decode image", "broken.png")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fails(["train", "vit", "--data", str(empty)], out, capsys, "empty.csv", "empty")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("file_name,y\nfolder/d0/00.png,d0\n")
    _fails(["train", "vit", "--data", str(nocol)], out, capsys, "nocol.csv", "--image-column")
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(f"path,label\n{image_data}/folder/d0/00.png,d9\n")
    _fails(["train", "vit", "--data", str(image_data / "folder"), "--test-data", str(test_csv)], out, capsys,
           "unknown label 'd9'")
    _fails(["train", "vit", "--data", str(tmp_path / "nowhere")], out, capsys, "not found", "nowhere")
    _fails(["train", "vit", "--data", str(image_data / "folder" / "d0")], out, capsys, "no class subfolders")
    _fails(["train", "vit", "--patch-size", "5"], out, capsys, "divisible by patch_size")
