"""Core models → Hugging Face transformers format: the loaders' tensor maps run backwards.

* :func:`bert_to_hf` — a :class:`BertEncoder` (plus optional :class:`BertPooler` and linear classifier) →
  ``BertModel`` / ``BertForSequenceClassification`` (RoBERTa family: ``Roberta...``; pre-LN:
  ``MegatronBert...``) config dict and tensors.
* :func:`as_bert_encoder` — a token embedding + pre-LN core :class:`Encoder` (any positional encoding)
  → the equivalent MegatronBERT-form :class:`BertEncoder`, the input :func:`bert_to_hf` takes.
* :func:`gpt2_to_hf` — a :class:`CausalTransformerLM` (pre-LN, final LayerNorm) → ``GPT2LMHeadModel``.

Each returns ``(config, tensors)``: ``config`` a ``config.json`` dict with ``model_type`` and
``architectures``; ``tensors`` name → float32 tensor under the transformers names. The exported
model computes what ours computes (the same operations: positional tables, embedding scales and
absent biases are folded in exactly); what transformers has no equivalent for is a ConfigError.
:func:`core.pretrained.save.save_hf` writes them as a ``save_pretrained``-style folder.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import CausalTransformerLM
from ..positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from ..transformer import Decoder, Encoder
from .bert import PRE_LN_MODEL_TYPES, ROBERTA_MODEL_TYPES, BertEncoder, BertPooler, bert_specs
from .gpt2 import gpt2_specs
from .hf import export_tensors

__all__ = ["bert_to_hf", "as_bert_encoder", "gpt2_to_hf", "position_table", "HF_ACTIVATIONS"]

# core activation → transformers name of the same function (gelu_pytorch_tanh is F.gelu(approximate="tanh"))
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_BERT_CLASSES = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert",
                 "megatron-bert": "MegatronBert"}


def position_table(stack: Encoder | Decoder) -> Tensor:
    """(max_len, d_model): what the stack adds at each position (learned rows, the sinusoids, or zeros)."""
    pos = stack.pos
    if isinstance(pos, LearnedPositionalEmbedding):
        return pos.weight.detach()
    if isinstance(pos, SinusoidalPositionalEncoding):
        return pos.pe
    if pos is None:
        return torch.zeros(stack.cfg.max_len, stack.cfg.d_model)
    raise ConfigError(f"positional encoding {type(pos).__name__} has no Hugging Face equivalent")


@torch.no_grad()
def _copy_into(new: nn.Module, src: dict[str, Tensor], zero_biases: bool) -> nn.Module:
    """``new``'s state from ``src`` by name; with ``zero_biases`` a bias ``src`` lacks is zero (a
    ``bias=False`` model adds none: a zero bias computes the same)."""
    for name, value in new.state_dict().items():
        if name in src:
            value.copy_(src[name])
        elif zero_biases and name.endswith(".bias"):  # LayerNorms always have theirs: only Linear biases are absent
            value.zero_()
        else:
            raise RuntimeError(f"no source tensor for {name}")
    return new.eval()


def _activation(cfg: Any) -> str:
    if cfg.activation not in HF_ACTIVATIONS:
        raise ConfigError(f"activation {cfg.activation!r} has no transformers equivalent; expected one of {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[cfg.activation]


def as_bert_encoder(embedding: nn.Embedding, encoder: Encoder, pad_id: int) -> BertEncoder:
    """The MegatronBERT-form :class:`BertEncoder` computing ``encoder(embedding(ids))``.

    The embedding's scale (``TokenEmbedding.scale``, sqrt(d) by default) is folded into the word
    embeddings and the encoder's positional encoding into the position table; token-type embeddings
    are zero (the core encoder has none), shared layers are unshared, absent biases are zeros.

    Raises:
        ConfigError: a post-LN encoder (BERT's post-LN stack always normalises its embeddings, which the
            core encoder does not: transformers has no equivalent), or one without a final LayerNorm.
    """
    cfg = encoder.cfg
    if not cfg.norm_first or not cfg.use_final_norm:
        raise ConfigError("a post-LN encoder trained from scratch (norm_first=False) has no transformers equivalent: "
                          "BERT normalises its embeddings, this encoder does not; train with --norm-first true "
                          "(exported as MegatronBERT) or fine-tune a --pretrained BERT")
    canon = replace(cfg, positional="none", bias=True, share_layers=False, n_layers=len(encoder.layers))
    bert = BertEncoder(canon, embedding.num_embeddings, type_vocab_size=2, pad_id=pad_id, model_type="megatron-bert")
    src = {f"encoder.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("pos.")}
    src["embeddings.word.weight"] = embedding.weight.detach() * getattr(embedding, "scale", 1.0)
    src["embeddings.position.weight"] = position_table(encoder)
    src["embeddings.token_type.weight"] = torch.zeros_like(bert.embeddings.token_type.weight)
    return _copy_into(bert, src, zero_biases=not cfg.bias)


def _canonical_bert(bert: BertEncoder) -> BertEncoder:
    c = bert.config
    if c.bias and not c.share_layers:
        return bert
    new = BertEncoder(replace(c, bias=True, share_layers=False, n_layers=len(bert.encoder.layers)), bert.vocab_size,
                      bert.embeddings.token_type.num_embeddings, bert.pad_id, bert.model_type)
    return _copy_into(new, bert.state_dict(), zero_biases=not c.bias)


def bert_to_hf(
    bert: BertEncoder,
    pooler: BertPooler | None = None,
    classifier: nn.Linear | None = None,
    labels: Sequence[Any] | None = None,
    classifier_dropout: float | None = None,
    special_ids: dict[str, int | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json dict, tensors) of ``bert`` as transformers' ``{Bert,Roberta,MegatronBert,...}Model``, or
    with ``pooler`` + ``classifier`` (Linear d → C) ``...ForSequenceClassification``, whose logits are
    ``classifier(pooler(hidden))``.

    Args:
        labels: class names, index = logit position (``id2label``; default LABEL_i).
        classifier_dropout: dropout before the classifier (training only; recorded in the config).
        special_ids: e.g. ``{"bos_token_id": 2, "eos_token_id": 3}``, added to the config when not None.
    """
    mt = bert.model_type
    if mt not in _BERT_CLASSES:
        raise ConfigError(f"model_type {mt!r} cannot be exported; supported: {', '.join(_BERT_CLASSES)}")
    pre_ln = mt in PRE_LN_MODEL_TYPES
    c = bert.config
    if (c.norm_first, c.use_final_norm, bert.embeddings.norm is None) != (pre_ln, pre_ln, pre_ln):
        raise ConfigError(f"this encoder's layout (norm_first={c.norm_first}, final norm={c.use_final_norm}, embedding "
                          f"LayerNorm={bert.embeddings.norm is not None}) is not {mt}'s")
    if classifier is not None and pooler is None:
        raise ConfigError(f"{_BERT_CLASSES[mt]}ForSequenceClassification classifies tanh(dense([CLS])) (BERT's pooler); "
                          "this model has no pooler: train it with --pooling pooler")
    bert = _canonical_bert(bert)
    roberta = mt in ROBERTA_MODEL_TYPES
    head = classifier is not None
    prefix = ("roberta." if roberta else "bert.") if head else ""
    tensors = export_tensors(bert, bert_specs(bert, prefix))
    if pooler is not None:
        key = "classifier.dense" if roberta and head else f"{prefix}pooler.dense"
        tensors.update({f"{key}.{t}": getattr(pooler.dense, t).detach().float().clone() for t in ("weight", "bias")})
    if head:
        key = "classifier.out_proj" if roberta else "classifier"
        tensors[f"{key}.weight"] = classifier.weight.detach().float().clone()
        bias = classifier.bias if classifier.bias is not None else torch.zeros(classifier.out_features)
        tensors[f"{key}.bias"] = bias.detach().float().clone()
    cls = _BERT_CLASSES[mt]
    config: dict[str, Any] = {
        "architectures": [f"{cls}ForSequenceClassification" if head else f"{cls}Model"],
        "model_type": mt,
        "vocab_size": bert.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": len(bert.encoder.layers),
        "num_attention_heads": c.n_heads,
        "intermediate_size": c.d_ff,
        "hidden_act": _activation(c),
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": bert.embeddings.position.num_embeddings,
        "type_vocab_size": bert.embeddings.token_type.num_embeddings,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": bert.pad_id,
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
    }
    if head:
        names = [str(v) for v in labels] if labels is not None else [f"LABEL_{i}" for i in range(classifier.out_features)]
        if len(names) != classifier.out_features:
            raise ConfigError(f"{len(names)} labels for a classifier with {classifier.out_features} outputs")
        config.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
                      problem_type="single_label_classification", classifier_dropout=classifier_dropout)
    config.update({k: v for k, v in (special_ids or {}).items() if v is not None})
    return config, tensors


def gpt2_to_hf(model: CausalTransformerLM, bos_id: int | None = None,
               eos_id: int | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json dict, tensors) of a decoder-only LM as transformers' ``GPT2LMHeadModel``.

    Learned, sinusoidal or no positions become GPT-2's ``wpe`` table; an untied output keeps its own
    ``lm_head.weight`` (and any embedding scale is folded into ``wte``).

    Raises:
        ConfigError: post-LN or no final LayerNorm (GPT-2 is pre-LN with ``ln_f``), an output bias, or a
            tied output with scaled embeddings (``scale_embeddings=True``: GPT-2 has no embedding scale).
    """
    cfg = model.cfg
    if not cfg.norm_first or not cfg.use_final_norm:
        raise ConfigError("GPT-2 is pre-LN with a final LayerNorm; this language model is "
                          f"{'post-LN (norm_first=False)' if not cfg.norm_first else 'without a final LayerNorm'}")
    if model.output.bias is not None:
        raise ConfigError("GPT-2's lm_head has no bias; this language model's output projection has one")
    tied = model.output.weight is model.embed.weight
    scale = float(model.embed.scale)
    if tied and scale != 1.0:
        raise ConfigError(f"embeddings scaled by {scale:g} with a tied output have no GPT-2 equivalent "
                          "(GPT-2 does not scale its embeddings)")
    canon = replace(cfg, positional="learned", bias=True, share_layers=False, n_layers=len(model.decoder.layers),
                    n_decoder_layers=None)
    new = CausalTransformerLM(canon, model.vocab_size, None, tie_output=tied, scale_embeddings=False)
    src = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.pos.")}
    src["embed.weight"] = model.embed.weight.detach() * scale
    if tied:
        src["output.weight"] = src["embed.weight"]
    src["decoder.pos.weight"] = position_table(model.decoder)
    _copy_into(new, src, zero_biases=not cfg.bias)
    tensors = export_tensors(new, gpt2_specs(new, "transformer.", tied))
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": cfg.max_len,
        "n_embd": cfg.d_model,
        "n_layer": len(model.decoder.layers),
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff,
        "activation_function": _activation(cfg),
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attention_dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "use_cache": True,
        "tie_word_embeddings": tied,
    }
    config.update({k: v for k, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id)) if v is not None})
    return config, tensors
