"""BERT-family encoders (BERT, MiniLM, RoBERTa, MegatronBERT) from Hugging Face-format directories into ``core.Encoder``.

BERT is the paper's post-LN encoder with GELU, plus learned word + position + token-type embeddings
followed by a LayerNorm. Those embeddings live in :class:`BertEmbeddings`; the stack is a plain
:class:`core.Encoder` built with ``positional="none"`` (its dropout then acts as BERT's embedding dropout).
MegatronBERT is the pre-LN variant: no embedding LayerNorm, a LayerNorm before each sublayer and one
after the stack. :class:`BertPooler` is BERT's ``tanh(dense(x[:, 0]))`` sentence head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TransformerConfig
from ..errors import ConfigError
from ..transformer import Encoder
from .hf import TensorSpec, assign_tensors, config_value, find_prefix, read_config, read_state_dict

__all__ = ["BertEmbeddings", "BertEncoder", "BertPooler", "bert_config", "bert_specs", "load_bert", "load_bert_pooler",
           "BERT_MODEL_TYPES", "ROBERTA_MODEL_TYPES", "PRE_LN_MODEL_TYPES"]

ROBERTA_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")  # positions numbered from pad_token_id + 1
PRE_LN_MODEL_TYPES = ("megatron-bert",)
BERT_MODEL_TYPES = ("bert", *ROBERTA_MODEL_TYPES, *PRE_LN_MODEL_TYPES)
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
# Source tensors a backbone checkpoint may carry besides the encoder (heads, buffers): never used, never an error.
_IGNORE = (r"^(bert\.|roberta\.)?pooler\.", r"^cls\.", r"^lm_head\.", r"^classifier\.", r"^qa_outputs\.",
           r"position_ids$")


def model_type_of(cfg: dict[str, Any]) -> str | None:
    mt = cfg.get("model_type")
    if mt is None:  # very old configs: infer from the architecture name
        arch = " ".join(cfg.get("architectures") or []).lower()
        mt = "roberta" if "roberta" in arch else "megatron-bert" if "megatronbert" in arch else "bert" if "bert" in arch else None
    return mt


def bert_config(cfg: dict[str, Any], where: Path | str = "config.json") -> TransformerConfig:
    """Translate a BERT-family ``config.json`` dict into a :class:`TransformerConfig` (post-LN, no final norm;
    MegatronBERT: pre-LN with a final norm)."""
    mt = model_type_of(cfg)
    if mt not in BERT_MODEL_TYPES:
        raise ConfigError(f"{where}/config.json: model_type {mt!r} (architectures {cfg.get('architectures')}) is not a "
                          f"BERT-family encoder; load_bert supports {', '.join(BERT_MODEL_TYPES)}")
    act = config_value(cfg, "hidden_act", where, "gelu", str)
    if act not in _ACTIVATIONS:
        raise ConfigError(f"{where}/config.json: hidden_act {act!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    pet = cfg.get("position_embedding_type", "absolute")
    if pet not in (None, "absolute"):
        raise ConfigError(f"{where}/config.json: position_embedding_type {pet!r} is not supported; only 'absolute'")
    if cfg.get("embedding_size", config_value(cfg, "hidden_size", where)) != cfg["hidden_size"]:
        raise ConfigError(f"{where}/config.json: embedding_size != hidden_size (ALBERT/ELECTRA-style) is not supported")
    return TransformerConfig(
        d_model=config_value(cfg, "hidden_size", where),
        n_heads=config_value(cfg, "num_attention_heads", where),
        n_layers=config_value(cfg, "num_hidden_layers", where),
        d_ff=config_value(cfg, "intermediate_size", where),
        dropout=config_value(cfg, "hidden_dropout_prob", where, 0.1, float),
        attention_dropout=config_value(cfg, "attention_probs_dropout_prob", where, 0.1, float),
        activation=_ACTIVATIONS[act],
        norm_first=mt in PRE_LN_MODEL_TYPES,
        max_len=config_value(cfg, "max_position_embeddings", where, 512),
        positional="none",
        layer_norm_eps=config_value(cfg, "layer_norm_eps", where, 1e-12, float),
        final_norm=mt in PRE_LN_MODEL_TYPES,
    )


class BertEmbeddings(nn.Module):
    """LayerNorm(word + position + token-type embeddings) (``norm=False``: the plain sum, MegatronBERT).
    ids (B, T) → (B, T, d).

    RoBERTa numbers positions from ``pad_id + 1`` and skips padding (``roberta_positions``).
    """

    def __init__(self, vocab_size: int, d_model: int, max_positions: int, type_vocab_size: int, pad_id: int,
                 eps: float, roberta_positions: bool = False, norm: bool = True) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.position = nn.Embedding(max_positions, d_model)
        self.token_type = nn.Embedding(type_vocab_size, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps) if norm else None
        self.pad_id, self.roberta_positions = pad_id, roberta_positions

    def forward(self, ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        B, T = ids.shape
        if self.roberta_positions:
            real = ids.ne(self.pad_id).long()
            positions = torch.cumsum(real, dim=1) * real + self.pad_id  # (B, T)
        else:
            positions = torch.arange(T, device=ids.device)[None].expand(B, T)  # (B, T)
        if int(positions.max()) >= self.position.num_embeddings:
            raise ConfigError(f"a sequence of {T} tokens exceeds the pretrained model's {self.position.num_embeddings} "
                              "position embeddings; truncate the input (e.g. lower --max-len)")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(ids)
        x = self.word(ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.norm(x) if self.norm is not None else x


class BertEncoder(nn.Module):
    """A BERT-family encoder: :class:`BertEmbeddings` + post-LN :class:`core.Encoder`.

    Attributes:
        config: the :class:`TransformerConfig` of the stack (d_model, n_heads, n_layers, d_ff, ...).
        pad_id: id of the padding token; vocab_size; model_type ("bert", "roberta", "megatron-bert", ...).
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, type_vocab_size: int = 2, pad_id: int = 0,
                 model_type: str = "bert") -> None:
        super().__init__()
        self.config, self.pad_id, self.vocab_size, self.model_type = cfg, pad_id, vocab_size, model_type
        self.embeddings = BertEmbeddings(vocab_size, cfg.d_model, cfg.max_len, type_vocab_size, pad_id,
                                         cfg.layer_norm_eps, roberta_positions=model_type in ROBERTA_MODEL_TYPES,
                                         norm=model_type not in PRE_LN_MODEL_TYPES)
        self.encoder = Encoder(cfg)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_attentions: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """input_ids long (B, T); attention_mask (B, T) 1/True at real tokens, 0/False at padding (the
        Hugging Face convention; None: every token is real); token_type_ids long (B, T) (None: zeros).

        Returns the last hidden state (B, T, d_model) — with ``output_attentions`` also a list of
        per-layer attention maps (B, n_heads, T, T). Rows at padded positions are not meaningful.
        """
        padding_mask = None if attention_mask is None else ~attention_mask.bool()  # (B, T) True at padding
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, d)
        return self.encoder(x, padding_mask, output_attentions=output_attentions)


class BertPooler(nn.Module):
    """BERT's pooler: ``tanh(dense(x[:, 0]))``, the first ([CLS]) token's state. x (B, T, d) → (B, d)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.dense(x[:, 0]))


def bert_specs(model: BertEncoder, prefix: str) -> dict[str, TensorSpec]:
    """Our parameter name → (Hugging Face tensor name under ``prefix``, None, None) for every parameter."""
    p = prefix
    specs: dict[str, TensorSpec] = {
        "embeddings.word.weight": (f"{p}embeddings.word_embeddings.weight", None, None),
        "embeddings.position.weight": (f"{p}embeddings.position_embeddings.weight", None, None),
        "embeddings.token_type.weight": (f"{p}embeddings.token_type_embeddings.weight", None, None),
    }
    ours = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
            "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
            "ffn.linear1": "intermediate.dense", "ffn.linear2": "output.dense"}
    if model.model_type in PRE_LN_MODEL_TYPES:  # LayerNorm before each sublayer and after the stack
        ours.update(norm1="attention.ln", norm2="ln")
        norms = {"encoder.norm": f"{p}encoder.ln"}
    else:
        ours.update(norm1="attention.output.LayerNorm", norm2="output.LayerNorm")
        norms = {"embeddings.norm": f"{p}embeddings.LayerNorm"}
    for mine, theirs in norms.items():
        for t in ("weight", "bias"):
            specs[f"{mine}.{t}"] = (f"{theirs}.{t}", None, None)
    for i in range(len(model.encoder.layers)):
        for mine, theirs in ours.items():
            for t in ("weight", "bias"):
                specs[f"encoder.layers.{i}.{mine}.{t}"] = (f"{p}encoder.layer.{i}.{theirs}.{t}", None, None)
    return specs


_PREFIXES = ("bert.", "roberta.", "model.")


def load_bert(path: str | Path, dropout: float | None = None, attention_dropout: float | None = None) -> BertEncoder:
    """Load a BERT-family encoder (``model_type`` bert — incl. MiniLM — roberta, xlm-roberta, camembert,
    megatron-bert).

    Args:
        path: a Hugging Face-format directory with config.json and model.safetensors / pytorch_model.bin
            (backbone or task-head checkpoints, e.g. ``BertModel`` or ``BertForSequenceClassification``),
            or a Hub id ``org/name`` (:func:`resolve_pretrained`).
        dropout, attention_dropout: override config.json's hidden / attention dropout (for fine-tuning).
    Returns:
        a :class:`BertEncoder`; ``model(input_ids, attention_mask)`` → last hidden state (B, T, hidden).
    Raises:
        ConfigError: unknown architecture, or a tensor missing / of the wrong shape / unexpected.
    """
    raw = read_config(path)
    where = Path(path)
    cfg = bert_config(raw, where)
    if dropout is not None:
        cfg.dropout = dropout
    if attention_dropout is not None:
        cfg.attention_dropout = attention_dropout
    mt = model_type_of(raw)
    pad_id = config_value(raw, "pad_token_id", where, 1 if mt in ROBERTA_MODEL_TYPES else 0)
    model = BertEncoder(cfg, config_value(raw, "vocab_size", where), config_value(raw, "type_vocab_size", where, 2),
                        pad_id, mt)
    tensors, source = read_state_dict(path)
    prefix = find_prefix(tensors, "embeddings.word_embeddings.weight", _PREFIXES, source)
    ignore = _IGNORE + ((r"^(?!" + prefix.replace(".", r"\.") + ")",) if prefix else ())
    assign_tensors(model, bert_specs(model, prefix), tensors, source, ignore)
    model.hf_config = raw
    return model.eval()


def load_bert_pooler(path: str | Path, d_model: int) -> BertPooler:
    """A :class:`BertPooler` with the checkpoint's ``pooler.dense`` weights (BERT pretraining and
    ``BertForSequenceClassification`` checkpoints carry them); freshly initialised when it has none."""
    pooler = BertPooler(d_model)
    tensors, source = read_state_dict(path)
    prefix = find_prefix(tensors, "embeddings.word_embeddings.weight", _PREFIXES, source)
    if f"{prefix}pooler.dense.weight" in tensors:
        specs = {f"dense.{t}": (f"{prefix}pooler.dense.{t}", None, None) for t in ("weight", "bias")}
        assign_tensors(pooler, specs, tensors, source, ignore=(r"^(?!" + f"{prefix}pooler".replace(".", r"\.") + ")",))
    return pooler
