"""DETR detection task: parameter count, matcher vs brute force, set loss, equivalence of the core
stacks to DETR's transformer, data loading and validation, CLI train / evaluate / predict, learning."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from panformer.core import count_parameters
from panformer.tasks.cli import main
from panformer.tasks.detection import (DETR, DetectionArguments, DetectionTask, HungarianMatcher, SetCriterion, coco_map,
                             detr_config, detr_r50, digit_scenes, load_coco, load_hf, per_class_pr, postprocess)
from panformer.tasks.detection.backbone import SmallConvBackbone
from panformer.tasks.detection.matcher import match_cost


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a busy shared CPU run several times faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_detr(num_classes: int = 3, queries: int = 5, layers: int = 2) -> DETR:
    cfg = detr_config(d_model=32, n_heads=4, n_encoder_layers=layers, n_decoder_layers=layers, d_ff=64, dropout=0.0)
    return DETR(SmallConvBackbone((8, 16)), cfg, num_classes, queries)


# -- model ----------------------------------------------------------------------------------------
def test_detr_r50_parameter_count():
    model = detr_r50(num_classes=91)
    assert count_parameters(model, trainable_only=True) == 41_524_768
    frozen_stem = detr_r50(num_classes=91, trainable_backbone_layers=3)  # the paper's freezing of conv1 + layer1
    assert count_parameters(frozen_stem, trainable_only=True) == 41_302_368
    assert count_parameters(frozen_stem) == 41_524_768
    assert not any(p.requires_grad for p in frozen_stem.backbone.body[4].parameters())  # layer1


def test_forward_shapes_and_aux_outputs():
    model = _tiny_detr(num_classes=3, queries=5, layers=3).eval()
    images = torch.randn(2, 3, 40, 56)
    mask = torch.zeros(2, 40, 56, dtype=torch.bool)
    mask[1, :, 40:] = True  # second image is 40x40, padded on the right
    out = model(images, mask)
    assert out["pred_logits"].shape == (2, 5, 4) and out["pred_boxes"].shape == (2, 5, 4)
    assert len(out["aux_outputs"]) == 2 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 5, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    dets = postprocess(out, torch.tensor([[400, 560], [40, 40]]))
    assert dets[0]["boxes"].shape == (5, 4) and (dets[1]["boxes"] <= 40 + 1e-4).all()
    assert (dets[0]["labels"] < 3).all()  # no-object is never a predicted label


def _mha_ref(ours) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(ours.d_model, ours.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    return ref


def test_transformer_matches_detr_reference():
    """The core stacks as DETR uses them equal DETR's own post-norm transformer (forward_post):
    positions added to queries/keys in every layer, no encoder final norm, a normed decoder stack."""
    torch.manual_seed(0)
    model = _tiny_detr(layers=2).eval()
    B, S, Q, d = 2, 12, 5, 32
    src, pos = torch.randn(B, S, d), torch.randn(B, S, d)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[1, 9:] = True
    query_pos = model.query_embed.weight[None].expand(B, -1, -1)
    with torch.no_grad():
        memory = model.encoder(src, kpm, pos=pos)
        hs = model.decoder_norm(model.decoder(torch.zeros(B, Q, d), memory, memory_padding_mask=kpm, pos=pos,
                                              query_pos=query_pos, causal=False, return_intermediate=True))
        x = src
        for layer in model.encoder.layers:
            q = x + pos
            x = layer.norm1(x + _mha_ref(layer.self_attn)(q, q, x, key_padding_mask=kpm)[0])
            x = layer.norm2(x + layer.ffn(x))
        keep = ~kpm  # padded positions are never read (cross-attention masks them; core skips their FFN)
        assert torch.allclose(memory[keep], x[keep], atol=1e-5)
        t, inter = torch.zeros(B, Q, d), []
        for layer in model.decoder.layers:
            q = t + query_pos
            t = layer.norm1(t + _mha_ref(layer.self_attn)(q, q, t)[0])
            t = layer.norm2(t + _mha_ref(layer.cross_attn)(t + query_pos, x + pos, x, key_padding_mask=kpm)[0])
            t = layer.norm3(t + layer.ffn(t))
            inter.append(model.decoder_norm(t))
        assert torch.allclose(hs, torch.stack(inter), atol=1e-5)


# -- matcher and loss -----------------------------------------------------------------------------
def test_matcher_agrees_with_brute_force():
    g = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    for trial in range(20):
        Q, n = 5, trial % 5  # including images without boxes
        logits = torch.randn(1, Q, 4, generator=g)
        boxes = torch.rand(1, Q, 4, generator=g) * 0.5 + 0.25
        tgt = {"labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.25}
        (rows, cols), = matcher({"pred_logits": logits, "pred_boxes": boxes}, [tgt])
        assert len(rows) == len(cols) == n
        if n == 0:
            continue
        cost = match_cost(logits[0], boxes[0], tgt["labels"], tgt["boxes"])  # (Q, n)
        best = min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(Q), n))
        assert torch.isclose(cost[rows, cols].sum(), best, atol=1e-5)


def test_set_loss_zero_for_perfect_predictions_and_larger_otherwise():
    crit = SetCriterion(num_classes=3, eos_coef=0.1)
    targets = [{"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]])},
               {"labels": torch.tensor([], dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    logits = torch.full((2, 4, 4), -30.0)
    logits[..., 3] = 30.0  # every query says no-object ...
    boxes = torch.full((2, 4, 4), 0.5)
    logits[0, 2], logits[0, 0] = torch.tensor([-30.0, -30, 30, -30]), torch.tensor([30.0, -30, -30, -30])  # ... but two
    boxes[0, 2], boxes[0, 0] = targets[0]["boxes"]
    perfect = {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}]}
    total, parts = crit(perfect, targets)
    assert total.item() < 1e-6 and parts["loss_bbox"] == 0 and parts["loss_giou"].abs() < 1e-6 and parts["class_error"] == 0
    worse = {"pred_logits": logits, "pred_boxes": boxes.clone()}
    worse["pred_boxes"][0, 2] += 0.05
    total_w, parts_w = crit(worse, targets)
    assert parts_w["loss_bbox"] > 0 and parts_w["loss_giou"] > 0 and total_w > total
    wrong = {"pred_logits": logits.roll(1, dims=-1), "pred_boxes": boxes}
    assert crit(wrong, targets)[1]["loss_ce"] > 10


def test_coco_map_and_per_class_pr():
    gts = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 62]]), "labels": torch.tensor([0, 1]), "width": 64, "height": 64}]
    perfect = [{"boxes": gts[0]["boxes"].clone(), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])}]
    m = coco_map(perfect, gts, num_classes=2)
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0)
    pr = per_class_pr(perfect, gts, ["a", "b"])
    assert pr["precision_50"] == pr["recall_50"] == 1.0
    half = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [0, 0, 5, 5]]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])}]
    m = coco_map(half, gts, num_classes=2)
    assert m["map_50"] == pytest.approx(0.5)
    pr = per_class_pr(half, gts, ["a", "b"])
    assert pr["recall_50/a"] == 1.0 and pr["recall_50/b"] == 0.0 and pr["precision_50/b"] == 0.0


# -- data -----------------------------------------------------------------------------------------
def test_digit_scenes_are_deterministic_with_exact_boxes():
    a, b = digit_scenes(20, seed=3), digit_scenes(20, seed=3)
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))
    assert not torch.equal(a[0]["image"], digit_scenes(1, seed=4)[0]["image"])
    for s in a:
        img = s["image"][0].float() / 255
        assert s["image"].shape == (3, 64, 64) and 1 <= len(s["labels"]) <= 4 and (s["labels"] < 10).all()
        inside = torch.zeros(64, 64, dtype=torch.bool)
        for x0, y0, x1, y1 in s["boxes"].long().tolist():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert img[y0:y1, x0].max() > 0.1 and img[y0:y1, x1 - 1].max() > 0.1  # ink touches the box edges
            assert img[y0, x0:x1].max() > 0.1 and img[y1 - 1, x0:x1].max() > 0.1
            inside[y0:y1, x0:x1] = True
        assert img[~inside].max() < 0.3  # background is faint noise only


def _write_coco(root: Path, n: int = 6, seed: int = 0) -> Path:
    """Write ``n`` digit scenes as PNG files + instances.json with sparse category ids (10..19)."""
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for s in digit_scenes(n, seed):
        name = f"img/scene_{s['image_id']}.png"
        Image.fromarray(s["image"].permute(1, 2, 0).numpy()).save(root / name)
        images.append({"id": s["image_id"] + 100, "file_name": name, "width": 64, "height": 64})
        for (x0, y0, x1, y1), c in zip(s["boxes"].tolist(), s["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": s["image_id"] + 100, "category_id": c + 10,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c + 10, "name": f"digit{c}"} for c in range(10)]}))
    return path


def test_load_coco_maps_sparse_category_ids(tmp_path):
    path = _write_coco(tmp_path, 4)
    records, cats = load_coco(path, None)  # file names are relative to the JSON's folder by default
    assert [c["id"] for c in cats] == list(range(10, 20)) and cats[3]["name"] == "digit3"
    ref = digit_scenes(4, 0)
    assert torch.equal(records[2]["boxes"], ref[2]["boxes"]) and torch.equal(records[2]["labels"], ref[2]["labels"])


def test_load_hf_dataset_folder(tmp_path):
    import datasets
    from PIL import Image

    scenes = digit_scenes(3, 1)
    rows = {"image": [Image.fromarray(s["image"].permute(1, 2, 0).numpy()) for s in scenes],
            "objects": [{"bbox": [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in s["boxes"].tolist()],
                         "category": s["labels"].tolist()} for s in scenes]}
    features = datasets.Features({"image": datasets.Image(), "objects": {
        "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
        "category": datasets.Sequence(datasets.ClassLabel(names=[f"d{i}" for i in range(10)]))}})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    records, cats = load_hf(str(tmp_path / "hf"), "--data", "train")
    assert [c["name"] for c in cats][:2] == ["d0", "d1"] and len(records) == 3
    assert torch.allclose(records[1]["boxes"], scenes[1]["boxes"]) and torch.equal(records[1]["labels"], scenes[1]["labels"])
    from panformer.tasks.detection.data import record_image
    assert torch.equal(record_image(records[0]), scenes[0]["image"])


def _bad(tmp_path: Path, edit) -> Path:
    path = _write_coco(tmp_path / "data", 4)
    coco = json.loads(path.read_text())
    edit(coco, tmp_path / "data")
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing_image", "image file not found"),
    ("corrupt_image", "cannot read image"),
    ("box_outside", "lies outside the 64x64 image"),
    ("unknown_category", "unknown category_id 99"),
    ("empty_file", "is empty"),
    ("no_annotations", "has no annotations"),
])
def test_bad_coco_input_is_a_clear_error(tmp_path, capsys, case, expected):
    def edit(coco, root):
        if case == "missing_image":
            (root / coco["images"][1]["file_name"]).unlink()
        elif case == "corrupt_image":
            (root / coco["images"][2]["file_name"]).write_bytes(b"\x89PNG not really")
        elif case == "box_outside":
            coco["annotations"][1]["bbox"] = [50, 50, 30, 10]
        elif case == "unknown_category":
            coco["annotations"][0]["category_id"] = 99
        elif case == "no_annotations":
            coco["annotations"] = []
    path = _bad(tmp_path, edit)
    if case == "empty_file":
        path.write_text("")
    out = tmp_path / "run"
    rc = main(["train", "detection", "--quick", "--data", str(path), "--image-dir", str(path.parent),
               "--out", str(out), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and "panformer: error:" in err and expected in err, err
    assert str(path) in err and not out.exists()
    if case in ("box_outside", "unknown_category"):
        assert "annotations[" in err


# -- the official COCO protocol for COCO-JSON input ------------------------------------------------
def _write_crowd_coco(root: Path) -> Path:
    """Three images with odd ids (one of them 80x60, one without boxes), non-contiguous category ids
    (3, 17, 90; 90 never annotated), a crowd region, and an ``area`` (the segment's, as in COCO) that
    puts the cat among the small objects although its 40x30 box covers 1,200 px (medium)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    images = [{"id": 397133, "file_name": "a.png", "width": 80, "height": 60},
              {"id": 7, "file_name": "b.png", "width": 64, "height": 64},
              {"id": 42, "file_name": "c.png", "width": 64, "height": 64}]
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (90, 90, 90)).save(root / im["file_name"])
    anns = [{"id": 11, "image_id": 397133, "category_id": 3, "bbox": [10, 8, 40, 30], "area": 500.0, "iscrowd": 0},
            {"id": 12, "image_id": 397133, "category_id": 3, "bbox": [52, 5, 25, 50], "area": 1000.0, "iscrowd": 1},
            {"id": 13, "image_id": 7, "category_id": 17, "bbox": [5, 5, 50, 50], "area": 2500.0, "iscrowd": 0}]
    cats = [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 90, "name": "bird"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


class _FixedDetections(nn.Module):
    """Stands in for DETR: every call returns the same detections per image of the batch, given as
    (xyxy in original pixels, class index, score); image sizes are the originals (W, H)."""

    def __init__(self, dets: list[list[tuple[list[float], int, float]]], sizes: list[tuple[int, int]], num_classes: int):
        super().__init__()
        self.dets, self.sizes, self.k = dets, sizes, num_classes
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate asks for the device of the parameters

    def forward(self, images, mask=None):
        Q = max(len(d) for d in self.dets)
        logits = torch.full((len(self.dets), Q, self.k + 1), -30.0)
        logits[..., -1] = 30.0  # unused queries: no object
        boxes = torch.full((len(self.dets), Q, 4), 0.5)
        for i, (dets, (W, H)) in enumerate(zip(self.dets, self.sizes)):
            for q, ((x0, y0, x1, y1), c, s) in enumerate(dets):
                logits[i, q] = float(np.log((1 - s) / self.k))
                logits[i, q, c] = float(np.log(s))  # softmax: probability s for class c
                boxes[i, q] = torch.tensor([(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H])
        return {"pred_logits": logits.to(images.device), "pred_boxes": boxes.to(images.device)}


def _pycocotools_on_files(gt_json: Path, results_json: Path) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_json))
    ev = COCOeval(gt, gt.loadRes(str(results_json)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [max(float(v), 0.0) for v in ev.stats]


def test_coco_json_is_scored_against_the_original_file(tmp_path):
    """A detection inside a crowd region is ignored (not a false positive ranked above the true one),
    the file's ``area`` decides small / medium / large, and predictions go back to the file's image
    and category ids in original pixels: our mAP equals pycocotools run on the written results JSON."""
    from panformer.tasks.cli import resolve_train_args

    path = _write_crowd_coco(tmp_path / "coco")
    args, _ = resolve_train_args(DetectionTask, ["--data", str(path), "--valid-data", str(path), "--test-data", str(path),
                                                 "--image-size", "48", "--batch-size", "8"])
    task = DetectionTask(args)
    task.load_data()
    assert [c["id"] for c in task.categories] == [3, 17, 90]  # class index 0 = cat, 1 = dog
    assert [r["image_id"] for r in task.splits["test"]] == [397133, 7, 42]
    cat_box, crowd_hit, dog_box = [10.0, 8.0, 50.0, 38.0], [54.0, 10.0, 74.0, 50.0], [5.0, 5.0, 55.0, 55.0]
    model = _FixedDetections([[(cat_box, 0, 0.9), (crowd_hit, 0, 0.95)], [(dog_box, 1, 0.8)], [([0.0, 0.0, 10.0, 10.0], 1, 0.1)]],
                             [(80, 60), (64, 64), (64, 64)], num_classes=3)
    metrics = task.evaluate(model, "test", out_dir=tmp_path / "ev")
    # exact boxes: AP 1 at every IoU threshold for both classes once the crowd hit is ignored; counted as a
    # false positive (the re-built ground truth without crowd regions) it would halve the cat's AP (0.75 mean)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_75"] == pytest.approx(1.0)
    assert metrics["map_small"] == pytest.approx(1.0)  # the cat, small by the file's area 500 (< 32**2)
    assert metrics["map_medium"] == pytest.approx(1.0) and metrics["map_large"] == 0.0  # the dog; nothing large
    assert metrics["precision_50/cat"] == 1.0 and metrics["recall_50/cat"] == 1.0  # the crowd hit is ignored here too

    written = json.loads((tmp_path / "ev" / "detections_test.json").read_text())
    assert {d["image_id"] for d in written} == {397133, 7, 42} and {d["category_id"] for d in written} <= {3, 17, 90}
    cat = next(d for d in written if d["image_id"] == 397133 and d["score"] == pytest.approx(0.9))
    assert cat["category_id"] == 3 and cat["bbox"] == pytest.approx([10, 8, 40, 30], abs=1e-3)  # x, y, w, h in 80x60 pixels
    assert set(written[0]) == {"image_id", "category_id", "bbox", "score"}
    stats = _pycocotools_on_files(path, tmp_path / "ev" / "detections_test.json")
    assert [metrics[k] for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                                 "mar_1", "mar_10", "mar_100")] == stats[:9]


def test_coco_split_of_one_file_is_scored_on_its_own_images(tmp_path):
    """--data split into train / valid / test: each split is scored against the file, over its images only."""
    from panformer.tasks.cli import resolve_train_args
    from panformer.tasks.detection.metrics import coco_evaluate, load_coco_gt

    path = _write_coco(tmp_path / "data", 20, seed=2)
    args, _ = resolve_train_args(DetectionTask, ["--data", str(path), "--valid-fraction", "0.25", "--test-fraction", "0.25"])
    task = DetectionTask(args)
    task.load_data()
    test = task.splits["test"]
    perfect = _FixedDetections([[(b, int(l), 0.9) for b, l in zip(r["boxes"].tolist(), r["labels"])] for r in test],
                               [(64, 64)] * len(test), num_classes=10)
    metrics = task.evaluate(perfect, "test", out_dir=tmp_path / "ev")
    assert metrics["map"] == pytest.approx(1.0)  # the other splits' images do not count as missed boxes
    written = json.loads((tmp_path / "ev" / "detections_test.json").read_text())
    assert {d["image_id"] for d in written} == {r["image_id"] for r in test}
    everything = coco_evaluate(written, load_coco_gt(path))  # over every image of the file: most boxes missed
    assert everything["mar_100"] < 0.5 < metrics["mar_100"]


# -- CLI and learning -----------------------------------------------------------------------------
def test_cli_train_evaluate_predict_on_coco_files(tmp_path, capsys):
    train_json = _write_coco(tmp_path / "train", 16, seed=0)
    valid_json = _write_coco(tmp_path / "valid", 4, seed=1)
    run = tmp_path / "run"
    rc = main(["train", "detection", "--quick", "--data", str(train_json), "--valid-data", str(valid_json),
               "--test-data", str(valid_json), "--max-steps", "4", "--eval-every", "4", "--out", str(run), "--progress", "false"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("map", "map_50", "map_75", "precision_50", "recall_50", "precision_50/digit3", "recall_50/digit3"):
        assert 0.0 <= metrics[key] <= 1.0
    assert sorted((run / "predictions").glob("*.png"))
    assert json.loads((run / "assets" / "categories.json").read_text())[0] == {"id": 10, "name": "digit0"}
    written = json.loads((run / "detections_test.json").read_text())  # the final test's COCO results, in the file's ids
    assert {d["image_id"] for d in written} == set(range(100, 104)) and {d["category_id"] for d in written} <= set(range(10, 20))
    assert metrics["map"] == _pycocotools_on_files(valid_json, run / "detections_test.json")[0]
    capsys.readouterr()
    assert main(["evaluate", "detection", "--run", str(run), "--split", "test", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["map"] == pytest.approx(metrics["map"], abs=1e-6)
    assert len(json.loads((tmp_path / "ev" / "detections_test.json").read_text())) == len(written)
    capsys.readouterr()
    image = tmp_path / "valid" / "img" / "scene_0.png"
    assert main(["predict", "detection", "--run", str(run), str(image), "--score-threshold", "0.0",
                 "--draw-dir", str(tmp_path / "drawn")]) == 0
    pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pred["image"] == str(image) and len(pred["detections"]) == 6  # every query at threshold 0
    assert {"label", "score", "box"} <= set(pred["detections"][0]) and pred["detections"][0]["label"].startswith("digit")
    assert (tmp_path / "drawn" / "scene_0.png").is_file()


def _top_box_iou(task, model) -> float:
    """Mean IoU between each validation scene's single box and the model's most confident detection."""
    from torchvision.ops import box_iou

    preds, _ = task._run(model, "valid")
    ious = [box_iou(p["boxes"][p["scores"].argmax()][None], g["boxes"])[0, 0] for p, g in zip(preds, task.splits["valid"])]
    return float(torch.stack(ious).mean())


def test_short_run_on_builtin_scenes_learns_to_localise(tmp_path):
    """150 steps on one-digit built-in scenes: the most confident box overlaps the digit far better
    than an untrained model's, and the validation loss drops. (Learning the ten classes takes longer:
    see bench/detection_digits.py.)"""
    from panformer.tasks.cli import load_run

    run = tmp_path / "run"
    rc = main(["train", "detection", "--quick", "--out", str(run), "--progress", "false", "--builtin-scenes", "400",
               "--max-digits", "1", "--max-steps", "150", "--eval-every", "150", "--lr", "1e-3"])
    assert rc == 0
    task, model = load_run(run, "cpu")
    task.load_data()
    torch.manual_seed(0)
    untrained = task.build_model().eval()
    trained_iou, chance_iou = _top_box_iou(task, model), _top_box_iou(task, untrained)
    assert trained_iou > 0.3 and chance_iou < 0.15 and trained_iou > 2.5 * chance_iou, (trained_iou, chance_iou)
    assert task.evaluate(model)["loss"] < 0.6 * task.evaluate(untrained)["loss"]


def test_task_arguments_have_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(DetectionArguments))
    assert DetectionTask.main_metric == "map"
