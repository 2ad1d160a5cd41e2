"""BERT-family encoders (BERT, MiniLM, RoBERTa) from Hugging Face-format directories into ``core.Encoder``.

BERT is the paper's post-LN encoder with GELU, plus learned word + position + token-type embeddings
followed by a LayerNorm. Those embeddings live in :class:`BertEmbeddings`; the stack is a plain
:class:`core.Encoder` built with ``positional="none"`` (its dropout then acts as BERT's embedding dropout).
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

__all__ = ["BertEmbeddings", "BertEncoder", "bert_config", "load_bert", "BERT_MODEL_TYPES"]

BERT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
# Source tensors a backbone checkpoint may carry besides the encoder (heads, buffers): never used, never an error.
_IGNORE = (r"^(bert\.|roberta\.)?pooler\.", r"^cls\.", r"^lm_head\.", r"^classifier\.", r"^qa_outputs\.",
           r"position_ids$")


def model_type_of(cfg: dict[str, Any]) -> str | None:
    mt = cfg.get("model_type")
    if mt is None:  # very old configs: infer from the architecture name
        arch = " ".join(cfg.get("architectures") or []).lower()
        mt = "roberta" if "roberta" in arch else "bert" if "bert" in arch else None
    return mt


def bert_config(cfg: dict[str, Any], where: Path | str = "config.json") -> TransformerConfig:
    """Translate a BERT-family ``config.json`` dict into a :class:`TransformerConfig` (post-LN, no final norm)."""
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
        norm_first=False,
        max_len=config_value(cfg, "max_position_embeddings", where, 512),
        positional="none",
        layer_norm_eps=config_value(cfg, "layer_norm_eps", where, 1e-12, float),
        final_norm=False,
    )


class BertEmbeddings(nn.Module):
    """LayerNorm(word + position + token-type embeddings). ids (B, T) → (B, T, d).

    RoBERTa numbers positions from ``pad_id + 1`` and skips padding (``roberta_positions``).
    """

    def __init__(self, vocab_size: int, d_model: int, max_positions: int, type_vocab_size: int, pad_id: int,
                 eps: float, roberta_positions: bool = False) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.position = nn.Embedding(max_positions, d_model)
        self.token_type = nn.Embedding(type_vocab_size, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
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
        return self.norm(x)


class BertEncoder(nn.Module):
    """A BERT-family encoder: :class:`BertEmbeddings` + post-LN :class:`core.Encoder`.

    Attributes:
        config: the :class:`TransformerConfig` of the stack (d_model, n_heads, n_layers, d_ff, ...).
        pad_id: id of the padding token; vocab_size; model_type ("bert", "roberta", ...).
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, type_vocab_size: int = 2, pad_id: int = 0,
                 model_type: str = "bert") -> None:
        super().__init__()
        self.config, self.pad_id, self.vocab_size, self.model_type = cfg, pad_id, vocab_size, model_type
        self.embeddings = BertEmbeddings(vocab_size, cfg.d_model, cfg.max_len, type_vocab_size, pad_id,
                                         cfg.layer_norm_eps, roberta_positions=model_type != "bert")
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


def _bert_specs(model: BertEncoder, prefix: str) -> dict[str, TensorSpec]:
    p = prefix
    specs: dict[str, TensorSpec] = {
        "embeddings.word.weight": (f"{p}embeddings.word_embeddings.weight", None, None),
        "embeddings.position.weight": (f"{p}embeddings.position_embeddings.weight", None, None),
        "embeddings.token_type.weight": (f"{p}embeddings.token_type_embeddings.weight", None, None),
        "embeddings.norm.weight": (f"{p}embeddings.LayerNorm.weight", None, None),
        "embeddings.norm.bias": (f"{p}embeddings.LayerNorm.bias", None, None),
    }
    ours = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
            "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
            "norm1": "attention.output.LayerNorm", "ffn.linear1": "intermediate.dense",
            "ffn.linear2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(len(model.encoder.layers)):
        for mine, theirs in ours.items():
            for t in ("weight", "bias"):
                specs[f"encoder.layers.{i}.{mine}.{t}"] = (f"{p}encoder.layer.{i}.{theirs}.{t}", None, None)
    return specs


def load_bert(path: str | Path, dropout: float | None = None, attention_dropout: float | None = None) -> BertEncoder:
    """Load a BERT-family encoder (``model_type`` bert — incl. MiniLM — roberta, xlm-roberta, camembert).

    Args:
        path: a Hugging Face-format directory with config.json and model.safetensors / pytorch_model.bin
            (backbone or task-head checkpoints, e.g. ``BertModel`` or ``BertForSequenceClassification``).
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
    pad_id = config_value(raw, "pad_token_id", where, 1 if mt != "bert" else 0)
    model = BertEncoder(cfg, config_value(raw, "vocab_size", where), config_value(raw, "type_vocab_size", where, 2),
                        pad_id, mt)
    tensors, source = read_state_dict(path)
    prefix = find_prefix(tensors, "embeddings.word_embeddings.weight", ("bert.", "roberta.", "model."), source)
    ignore = _IGNORE + ((r"^(?!" + prefix.replace(".", r"\.") + ")",) if prefix else ())
    assign_tensors(model, _bert_specs(model, prefix), tensors, source, ignore)
    model.hf_config = raw
    return model.eval()
