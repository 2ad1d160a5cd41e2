"""``panformer export TASK --run DIR --out DIR [--format hf]``: a trained run as a Hugging Face folder.

The folder (``config.json`` with ``model_type`` / ``architectures``, ``model.safetensors`` under
transformers' tensor names, ``tokenizer.json`` + ``tokenizer_config.json``) loads with
``transformers.AutoModelFor...from_pretrained(DIR)`` / ``AutoTokenizer.from_pretrained(DIR)`` and computes
the run's logits, and loads back into panformer with ``--pretrained DIR``.

=============  =====================================================  ===================================
task           run configuration                                      transformers class
=============  =====================================================  ===================================
sentiment      ``--pretrained`` BERT / MiniLM + ``--pooling pooler``  ``BertForSequenceClassification``
sentiment      ``--pretrained`` RoBERTa family + ``--pooling pooler`` ``RobertaForSequenceClassification``
sentiment      from scratch, ``--norm-first true`` (pre-LN, default)  ``MegatronBertForSequenceClassification``
               + ``--pooling pooler``
generation     Transformer LM (``--arch transformer``, default)       ``GPT2LMHeadModel``
=============  =====================================================  ===================================

Anything else (``--pooling mean|max|cls``, ``--arch lstm|gru``, a post-LN encoder from scratch) has no
transformers class computing the same function and is a one-line ConfigError saying what to change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from panformer.core.errors import ConfigError
from panformer.core.models import CausalTransformerLM
from panformer.core.pretrained import as_bert_encoder, bert_to_hf, gpt2_to_hf, save_hf
from panformer.core.pretrained.save import check_out

__all__ = ["export_run", "main", "EXPORTERS", "FORMATS"]

FORMATS = ("hf",)


def _sentiment(task: Any, model: nn.Module) -> dict[str, Any]:
    from .sentiment import TextClassifier

    a = task.args
    arch = getattr(a, "arch", "transformer")
    if not isinstance(model, TextClassifier) or arch != "transformer":
        raise ConfigError(f"an --arch {arch} sentiment run has no transformers equivalent; only Transformer encoders "
                          "export (as BertForSequenceClassification)")
    if model.pooler is None:
        raise ConfigError(f"this run pools with --pooling {a.pooling}; transformers' ...ForSequenceClassification "
                          "classifies BERT's pooler output tanh(dense([CLS])): train with --pooling pooler to export")
    tok = task.tokenizer
    bert = model.encoder if model.embed is None else as_bert_encoder(model.embed, model.encoder, tok.pad_id)
    config, tensors = bert_to_hf(bert, model.pooler, model.head, labels=task.labels, classifier_dropout=a.dropout,
                                 special_ids={"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id})
    # the model reads [bos] text (+ [eos] when --pretrained), as SentimentTask._encode_texts feeds it
    return dict(config=config, tensors=tensors, tokenizer=tok, add_bos=True, add_eos=bool(a.pretrained),
                model_max_length=a.max_len)


def _generation(task: Any, model: nn.Module) -> dict[str, Any]:
    if not isinstance(model, CausalTransformerLM):
        raise ConfigError(f"an --arch {getattr(task.args, 'arch', '?')} generation run has no transformers "
                          "equivalent; only the Transformer LM exports (as GPT2LMHeadModel)")
    tok = task.tokenizer
    config, tensors = gpt2_to_hf(model, tok.bos_id, tok.eos_id)
    return dict(config=config, tensors=tensors, tokenizer=tok, model_max_length=model.cfg.max_len)


# task name → (task, model) → keyword arguments of core.pretrained.save_hf
EXPORTERS = {"sentiment": _sentiment, "generation": _generation}


def export_run(task_name: str, run: str | Path, out: str | Path, fmt: str = "hf", overwrite: bool = False) -> Path:
    """Write the run ``run`` of task ``task_name`` as a Hugging Face folder ``out``; returns ``out``."""
    from .cli import load_run

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    if task_name not in EXPORTERS:
        raise ConfigError(f"task {task_name!r} cannot be exported; exportable tasks: {', '.join(EXPORTERS)}")
    out = check_out(out, overwrite)  # before loading the run: fail fast
    task, model = load_run(run, device="cpu", task_name=task_name)
    if task.name != task_name:
        raise ConfigError(f"--run {run} is a {task.name!r} run, not {task_name!r}")
    return save_hf(out, **EXPORTERS[task_name](task, model.eval()), overwrite=overwrite)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="panformer export", description="write a trained run as a Hugging Face "
                                "transformers folder (config.json, model.safetensors, tokenizer files)")
    p.add_argument("task", metavar="TASK", help=f"the run's task: {' | '.join(EXPORTERS)}")
    p.add_argument("--run", required=True, metavar="DIR", help="a run directory written by `panformer train`")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--format", default="hf", choices=FORMATS, help="hf: transformers' save_pretrained layout (default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ns = p.parse_args(list(argv))
    out = export_run(ns.task, ns.run, ns.out, ns.format, ns.overwrite)
    print(f"[panformer] exported {ns.run} to {out} (load it with transformers' from_pretrained, or --pretrained {out})",
          file=sys.stderr)
    return 0
