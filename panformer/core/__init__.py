"""panformer core: the one Transformer and the shared engine. Knows no task."""
from .attention import MultiHeadAttention, get_attention_impl, set_attention_impl
from .cache import KVCache
from .config import TransformerConfig
from .decoding import DecodeState, SamplingArguments, beam_search, generate, greedy_search, sample, sampling_kwargs
from .embedding import OutputProjection, TokenEmbedding
from .errors import ConfigError, DataError, PanformerError
from .layers import DecoderLayer, EncoderLayer, FeedForward
from .masks import IGNORE_INDEX, causal_mask, lengths_to_padding_mask, mask_tokens
from .models import CausalTransformerLM, Seq2SeqTransformer, count_parameters
from .pooling import pool
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sine_positional_2d
from .rnn import RecurrentLM, RNNConfig, RNNEncoder
from .transformer import Decoder, Encoder, EncoderDecoder

from panformer import __version__  # noqa: E402,F401 - one version, kept in panformer/__init__.py

__all__ = [
    "TransformerConfig", "Encoder", "Decoder", "EncoderDecoder", "EncoderLayer", "DecoderLayer", "FeedForward",
    "MultiHeadAttention", "set_attention_impl", "get_attention_impl", "KVCache", "DecodeState",
    "greedy_search", "beam_search", "sample", "generate", "SamplingArguments", "sampling_kwargs", "TokenEmbedding", "OutputProjection",
    "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "sine_positional_2d",
    "lengths_to_padding_mask", "causal_mask", "mask_tokens", "IGNORE_INDEX", "pool",
    "Seq2SeqTransformer", "CausalTransformerLM", "count_parameters", "RNNConfig", "RNNEncoder", "RecurrentLM",
    "PanformerError", "DataError", "ConfigError",
]
