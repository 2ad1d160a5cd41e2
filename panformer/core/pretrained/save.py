"""Writing a ``save_pretrained``-style folder that transformers' ``from_pretrained`` reads.

    config.json                 model_type, architectures, sizes (from core.pretrained.export)
    model.safetensors           the tensors under transformers' names (metadata format=pt)
    tokenizer.json              the run's tokenizer; its post-processor adds the special tokens the
                                model was trained with, so ``AutoTokenizer(text)`` gives the model's ids
    tokenizer_config.json       tokenizer_class PreTrainedTokenizerFast, special tokens, model_max_length
    special_tokens_map.json

The folder appears whole or not at all: it is written beside ``out`` under a temporary name and
renamed into place (an existing ``out`` is replaced only with ``overwrite``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, processors
from torch import Tensor

from ..errors import ConfigError
from ..tokenizer import TextTokenizer

__all__ = ["save_hf", "hf_tokenizer_files", "check_out"]

# core TextTokenizer role → transformers special-token attribute
_ROLES = {"bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "pad": "pad_token", "mask": "mask_token"}
_ADDS_SPECIALS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing")


def hf_tokenizer_files(tok: TextTokenizer, add_bos: bool = False, add_eos: bool = False,
                       model_max_length: int | None = None) -> dict[str, str]:
    """File name → text of the transformers tokenizer files for ``tok``.

    ``add_bos`` / ``add_eos``: the model reads ``[bos] text [eos]`` (e.g. BERT's [CLS] ... [SEP]); the
    tokenizer's post-processor then adds them (and ``cls_token`` / ``sep_token`` name them). Without
    either, a post-processor that adds special tokens is removed, since the model never saw them.
    """
    t = Tokenizer.from_str(tok.tok.to_str())  # a copy: the run's tokenizer is left as it is
    t.no_padding()
    t.no_truncation()
    vocab = t.get_vocab()
    names = {role: name for role, name in tok.names.items() if name in vocab}
    for role, on in (("bos", add_bos), ("eos", add_eos)):
        if on and role not in names:
            raise ConfigError(f"the tokenizer has no {role} token {tok.names[role]!r} but the model was trained with one")
    if add_bos or add_eos:
        first = [names["bos"]] if add_bos else []
        last = [names["eos"]] if add_eos else []
        specials = [(names[r], vocab[names[r]]) for r, on in (("bos", add_bos), ("eos", add_eos)) if on]
        t.post_processor = processors.TemplateProcessing(  # pairs: [bos] A [eos] B [eos], B with type id 1
            single=[*first, "$A", *last], pair=[*first, "$A", *last, "$B:1", *(f"{x}:1" for x in last)],
            special_tokens=list(dict.fromkeys(specials)))
    elif (json.loads(t.to_str()).get("post_processor") or {}).get("type") in _ADDS_SPECIALS:
        t.post_processor = None
    special = {_ROLES[r]: n for r, n in names.items()}
    if add_bos:
        special["cls_token"] = names["bos"]
    if add_eos:
        special["sep_token"] = names["eos"]
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **special}
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    return {"tokenizer.json": t.to_str(pretty=True), "tokenizer_config.json": _json(config),
            "special_tokens_map.json": _json(special)}


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_out(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a Path; ConfigError when it exists, is not an empty folder and ``overwrite`` is False."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite or another --out")
    return out


def save_hf(out: str | Path, config: dict[str, Any], tensors: dict[str, Tensor], tokenizer: TextTokenizer | None = None,
            add_bos: bool = False, add_eos: bool = False, model_max_length: int | None = None,
            overwrite: bool = False) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files for ``tokenizer``) as the folder ``out``.

    Raises:
        ConfigError: ``out`` exists, is not an empty folder and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    out = check_out(out, overwrite)
    files = {"config.json": _json(config)}
    if tokenizer is not None:
        files.update(hf_tokenizer_files(tokenizer, add_bos, add_eos, model_max_length))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        os.chmod(tmp, 0o755)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        for f in tmp.iterdir():  # mkdtemp's folder is private; the export is meant to be shared
            os.chmod(f, 0o644)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out
