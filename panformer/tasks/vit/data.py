"""Image sources for the ``vit`` task: built-in sklearn digits, an ``imagefolder`` tree, a CSV (or any
table) of image paths and labels, Hugging Face datasets and torchvision datasets.

Every source gives uint8 images (C, H, W) with C = ``channels`` (1: grayscale, 3: RGB) and raw labels
(ints or strings). Problems are reported as :class:`core.errors.DataError` naming the file, row or
column and what was expected.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from panformer.core.data import (TABLE_SUFFIXES, default_split, is_saved_dataset, load_hf_dataset, load_table,
                                  parse_hub_spec, require_columns)
from panformer.core.errors import DataError

__all__ = ["ImageSource", "TensorImages", "FileImages", "HFImages", "TorchvisionImages", "digits",
           "digits_split", "open_source", "load_image", "build_transform", "ImageDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_COLUMNS = ("image", "img", "image_path", "path", "file", "filename", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "category", "target")


def _to_channels(img: Tensor, channels: int) -> Tensor:
    """uint8 (C, H, W) with C in {1, 3, 4} → (channels, H, W)."""
    if img.size(0) == 4:
        img = img[:3]
    if img.size(0) == channels:
        return img
    return img.expand(3, -1, -1).contiguous() if channels == 3 else TF.rgb_to_grayscale(img)


def load_image(path: str | Path, channels: int, what: str = "image") -> Tensor:
    """Decode an image file to uint8 (channels, H, W); a missing or undecodable file is a DataError."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: image file not found: {p}")
    try:
        with Image.open(p) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            return TF.pil_to_tensor(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what}: cannot decode image {p} ({type(e).__name__}: {str(e)[:120]}); "
                        f"expected a PNG/JPEG/BMP/GIF/WebP/TIFF file") from None


def _pil_to_tensor(im: Any, channels: int) -> Tensor:
    return TF.pil_to_tensor(im.convert("L" if channels == 1 else "RGB"))


class ImageSource:
    """A list of labelled images. ``labels[i]`` is raw (int or str); ``load(i)`` → uint8 (C, H, W)."""

    labels: list[Any]
    name: str = "images"

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Tensor:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"{self.name}[{i}]"

    def subset(self, indices: Sequence[int]) -> "ImageSource":
        return _Subset(self, list(indices))


class _Subset(ImageSource):
    def __init__(self, parent: ImageSource, indices: list[int]) -> None:
        self.parent, self.indices, self.name = parent, indices, parent.name
        self.labels = [parent.labels[i] for i in indices]

    def load(self, i: int) -> Tensor:
        return self.parent.load(self.indices[i])

    def describe(self, i: int) -> str:
        return self.parent.describe(self.indices[i])


class TensorImages(ImageSource):
    """Images already in memory: uint8 (N, C, H, W)."""

    def __init__(self, images: Tensor, labels: Sequence[Any], channels: int, name: str = "images") -> None:
        self.images, self.labels, self.channels, self.name = images, list(labels), channels, name

    def load(self, i: int) -> Tensor:
        return _to_channels(self.images[i], self.channels)


class FileImages(ImageSource):
    """Image files on disk, decoded when used. ``verify`` checks that each file exists and decodes."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[Any], channels: int, name: str, what: str,
                 verify: bool = True, rows: Sequence[str] | None = None) -> None:
        self.paths, self.labels, self.channels, self.name, self.what = list(paths), list(labels), channels, name, what
        if verify:
            from PIL import Image

            for i, p in enumerate(self.paths):
                where = f"{what} {name}: {rows[i]}: " if rows else f"{what}: "
                if not p.is_file():
                    raise DataError(f"{where}image file not found: {p}")
                try:
                    with Image.open(p) as im:
                        im.verify()
                except Exception as e:  # noqa: BLE001 - PIL raises many kinds for corrupt files
                    raise DataError(f"{where}cannot decode image {p} ({type(e).__name__}: {str(e)[:100]}); "
                                    f"expected a PNG/JPEG/BMP/GIF/WebP/TIFF file") from None

    def load(self, i: int) -> Tensor:
        return load_image(self.paths[i], self.channels, self.what)

    def describe(self, i: int) -> str:
        return str(self.paths[i])


class HFImages(ImageSource):
    """A Hugging Face ``datasets.Dataset`` with an image column (decoded to PIL) and a label column."""

    def __init__(self, ds: Any, image_column: str, labels: Sequence[Any], channels: int, name: str) -> None:
        self.ds, self.column, self.labels, self.channels, self.name = ds, image_column, list(labels), channels, name

    def load(self, i: int) -> Tensor:
        im = self.ds[i][self.column]
        if hasattr(im, "convert"):
            return _pil_to_tensor(im, self.channels)
        a = torch.as_tensor(np.asarray(im, dtype=np.uint8))  # (H, W) or (H, W, C) pixel arrays
        return _to_channels(a[None] if a.ndim == 2 else a.permute(2, 0, 1).contiguous(), self.channels)


class TorchvisionImages(ImageSource):
    """A ``torchvision.datasets`` dataset yielding (PIL image, class index)."""

    def __init__(self, ds: Any, labels: Sequence[Any], channels: int, name: str) -> None:
        self.ds, self.labels, self.channels, self.name = ds, list(labels), channels, name

    def load(self, i: int) -> Tensor:
        return _pil_to_tensor(self.ds[i][0], self.channels)


# -- built-in data ---------------------------------------------------------------------------------
def digits(channels: int = 1) -> TensorImages:
    """sklearn's 1,797 handwritten digits (UCI optdigits test set; 8x8, 17 grey levels), installed with
    scikit-learn (BSD-3; data: UCI ML repository, CC BY 4.0). Pixels scaled 0..16 → 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]  # (N, 1, 8, 8)
    return TensorImages(images, [int(t) for t in bunch.target], channels, name="sklearn digits")


def digits_split(labels: Sequence[int], valid_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """The fixed digits split: 25 % stratified test with ``random_state=0`` (sklearn's guide: 450
    images); ``valid_fraction`` of the remaining 1,347, stratified with ``random_state=seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    y = np.asarray(labels)
    rest, test = train_test_split(idx, test_size=0.25, stratify=y, random_state=0)
    if valid_fraction <= 0:
        return rest.tolist(), [], test.tolist()
    train, valid = train_test_split(rest, test_size=valid_fraction, stratify=y[rest], random_state=seed)
    return train.tolist(), valid.tolist(), test.tolist()


# -- user sources ----------------------------------------------------------------------------------
def _imagefolder(root: Path, channels: int, what: str, verify: bool) -> FileImages:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{what} {root}: no class subfolders; expected the imagefolder layout ROOT/<class>/<image>.png")
    paths, labels = [], []
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise DataError(f"{what} {root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return FileImages(paths, labels, channels, root.name, what, verify)


def _pick(columns: Sequence[str], given: str | None, candidates: Sequence[str], option: str, source: str, what: str) -> str:
    if given:
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise DataError(f"{what} {source}: none of the columns {', '.join(candidates)} found (columns: "
                        f"{', '.join(columns)}); name the right one with {option}")
    return found


def _table(ds: Any, source: str, what: str, channels: int, image_column: str | None, label_column: str | None,
           image_root: str | None, verify: bool) -> ImageSource:
    """A table with an image column (paths, or images decoded by ``datasets``) and a label column."""
    img_col = _pick(ds.column_names, image_column, IMAGE_COLUMNS, "--image-column", source, what)
    lab_col = _pick(ds.column_names, label_column, LABEL_COLUMNS, "--label-column", source, what)
    require_columns(ds, {img_col: "--image-column", lab_col: "--label-column"}, source, what)
    raw = ds[lab_col]
    feature = ds.features.get(lab_col)
    names = getattr(feature, "names", None)  # datasets.ClassLabel
    labels: list[Any] = []
    for i, y in enumerate(raw):
        if y is None or (isinstance(y, float) and y != y) or (isinstance(y, str) and not y.strip()):
            raise DataError(f"{what} {source}: row {i + 1}: column {lab_col!r} has no label")
        if names is not None and isinstance(y, int) and y < 0:
            raise DataError(f"{what} {source}: row {i + 1}: column {lab_col!r} is unlabelled ({y})")
        labels.append(names[y] if names is not None else (y.item() if hasattr(y, "item") else y))
    kind = type(ds.features.get(img_col)).__name__
    if kind == "Image":
        return HFImages(ds, img_col, labels, channels, Path(source).name)
    values = ds[img_col]
    if not all(isinstance(v, str) and v.strip() for v in values):
        bad = next(i for i, v in enumerate(values) if not (isinstance(v, str) and v.strip()))
        raise DataError(f"{what} {source}: row {bad + 1}: column {img_col!r} should be an image path, got {values[bad]!r}")
    base = Path(image_root).expanduser() if image_root else Path(source).expanduser().parent
    paths = [Path(v) if Path(v).is_absolute() else base / v for v in values]
    rows = [f"row {i + 1} (column {img_col!r})" for i in range(len(paths))]
    return FileImages(paths, labels, channels, Path(source).name, what, verify, rows)


def _torchvision(spec: str, root: str, default_split: str, channels: int, what: str) -> TorchvisionImages:
    """``torchvision:NAME[:SPLIT]`` from ``root`` (no download: the files must already be there)."""
    import torchvision.datasets as tvd

    parts = spec.split(":")
    name, split = parts[1], (parts[2] if len(parts) > 2 else default_split)
    cls = getattr(tvd, name, None)
    if cls is None or not inspect.isclass(cls):
        raise DataError(f"{what}: unknown torchvision dataset {name!r}; e.g. torchvision:MNIST, torchvision:CIFAR10:test")
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {}
    if "train" in params:
        kw["train"] = split == "train"
    elif "split" in params:
        kw["split"] = split
    if "download" in params:
        kw["download"] = False
    try:
        ds = cls(str(Path(root).expanduser()), **kw)
    except Exception as e:  # noqa: BLE001 - missing files, bad split ...
        raise DataError(f"{what}: cannot open torchvision dataset {name} (split {split!r}) in {root} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); put its files there or set --data-root") from None
    targets = next((getattr(ds, a) for a in ("targets", "_labels", "labels") if hasattr(ds, a)), None)
    targets = [int(t) for t in targets] if targets is not None else [int(ds[i][1]) for i in range(len(ds))]
    classes = list(getattr(ds, "classes", []) or [])
    labels = [classes[t] if t < len(classes) else t for t in targets]
    if not labels:
        raise DataError(f"{what}: torchvision dataset {name} split {split!r} is empty")
    return TorchvisionImages(ds, labels, channels, f"torchvision {name} ({split})")


def open_source(source: str, what: str, channels: int, image_column: str | None = None,
                label_column: str | None = None, image_root: str | None = None, data_root: str = "data",
                verify: bool = True, split: str | None = None) -> ImageSource:
    """Open ``source`` by its form: ``torchvision:NAME[:SPLIT]``; a folder saved by ``datasets``
    (``save_to_disk``) or an ``imagefolder`` tree; a CSV/TSV/JSON/JSONL/Parquet table; a dataset
    ``NAME[:CONFIG][:SPLIT]``. ``split`` (default: the flag's, e.g. test for --test-data) is read when the
    source names none."""
    if source.startswith("torchvision:"):
        return _torchvision(source, data_root, split or default_split(what), channels, what)
    path = Path(source).expanduser()
    if path.is_dir():
        if is_saved_dataset(path) or (path / "dataset_info.json").is_file():
            ds = load_hf_dataset(source, what, split)
            return _table(ds, source, what, channels, image_column, label_column, image_root, verify)
        return _imagefolder(path, channels, what, verify)
    if path.exists() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{what}: {path} is a single image; pass a folder of class subfolders or a CSV of paths and labels")
    if not path.exists() and parse_hub_spec(source) is None:
        raise DataError(f"{what}: file or folder not found: {source}")
    if path.exists() and not any(s.lower() in TABLE_SUFFIXES for s in path.suffixes):
        raise DataError(f"{what}: {path}: unsupported file type {path.suffix!r}; expected a folder, "
                        f"{', '.join(TABLE_SUFFIXES)} or torchvision:NAME")
    ds = load_table(source, what, split=split)
    return _table(ds, source, what, channels, image_column, label_column, image_root, verify)


# -- transforms and the dataset --------------------------------------------------------------------
def build_transform(image_size: int, mean: Sequence[float], std: Sequence[float], augment: str, train: bool) -> v2.Compose:
    """uint8 (C, H, W) → float (C, image_size, image_size), normalised.

    augment (train only): ``none``; ``crop-flip`` (random-resized crop with scale 0.5–1 and horizontal flips:
    photos). ``affine`` (±10° rotation, ±10 % shift, 0.9–1.1 scale: digits, characters) is not applied here
    but to whole batches, by :func:`panformer.core.augment.random_affine` in the task's loss.
    Evaluation: resize the short side to ``image_size`` and centre-crop.
    """
    ops: list[Any]
    if train and augment == "crop-flip":
        ops = [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


class ImageDataset(torch.utils.data.Dataset):
    """(image float (C, S, S), class index) pairs from an :class:`ImageSource`.

    ``cache_mb``: with a deterministic ``transform`` (no random augmentation), keep each transformed image
    after its first use while they fit in this many MiB (small datasets: later epochs and evaluations skip
    the per-image decode, resize and normalise)."""

    def __init__(self, source: ImageSource, label_index: dict[Any, int], transform: Callable[[Tensor], Tensor],
                 cache_mb: float = 0.0) -> None:
        self.source, self.label_index, self.transform = source, label_index, transform
        self.cache_mb = cache_mb
        self._cache: dict[int, Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self._cache.get(i)
        if x is None:
            x = self.transform(self.source.load(i))
            if self._cached_bytes + x.nbytes <= self.cache_mb * 2**20:
                self._cache[i] = x
                self._cached_bytes += x.nbytes
        return x, self.label_index[self.source.labels[i]]
