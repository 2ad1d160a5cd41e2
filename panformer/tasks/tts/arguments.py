"""Options of the ``tts`` task."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["TTSArguments", "MODEL_FIELDS", "PREDICT_FIELDS"]


@dataclass
class TTSArguments:
    # data
    builtin_size: int = field(default=1000, metadata={"help": "utterances of built-in espeak-ng speech (without --data)"})
    builtin_kind: str = field(default="mixed", metadata={"help": "built-in sentences: digits | phrases | mixed"})
    builtin_seed: int = field(default=0, metadata={"help": "seed of the built-in sentences"})
    builtin_voice: str = field(default="en-us", metadata={"help": "espeak-ng voice of the built-in speech (one speaker)"})
    builtin_rate: int = field(default=160, metadata={"help": "speaking rate of the built-in speech (words per minute)"})
    audio_column: str | None = field(default=None, metadata={"help": "manifest / dataset audio column (default: file_name, path, audio, ...)"})
    text_column: str | None = field(default=None, metadata={"help": "text column (default: transcription, text, sentence, ...)"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase the input text"})
    strip_punctuation: bool = field(default=True, metadata={"help": "remove punctuation from the input text"})
    max_seconds: float = field(default=12.0, metadata={"help": "reject training clips longer than this (seconds)"})
    # features
    sample_rate: int = field(default=16000, metadata={"help": "sample rate (Hz) of the targets and the output wav"})
    n_mels: int = field(default=80, metadata={"help": "log-mel bins"})
    win_ms: float = field(default=50.0, metadata={"help": "analysis window (ms); the FFT is the next power of two"})
    hop_ms: float = field(default=12.5, metadata={"help": "frame hop (ms)"})
    # model
    d_model: int = field(default=128, metadata={"help": "model width"})
    n_heads: int = field(default=2, metadata={"help": "attention heads"})
    n_layers: int = field(default=2, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=2, metadata={"help": "decoder layers"})
    d_ff: int = field(default=512, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout of the Transformer stacks"})
    encoder_convs: int = field(default=2, metadata={"help": "conv layers (kernel 5) of the encoder pre-net"})
    prenet_dim: int = field(default=128, metadata={"help": "width of the 2-layer decoder pre-net"})
    prenet_dropout: float = field(default=0.5, metadata={"help": "decoder pre-net dropout (training only)"})
    postnet_channels: int = field(default=128, metadata={"help": "channels of the 5-layer convolutional post-net"})
    reduction: int = field(default=3, metadata={"help": "mel frames predicted per decoder step (Tacotron's r)"})
    # loss
    guided_attention_weight: float = field(default=10.0, metadata={
        "help": "weight of the guided attention loss on every cross-attention map (0 disables it)"})
    guided_attention_sigma: float = field(default=0.2, metadata={"help": "width g of the guided attention penalty"})
    stop_weight: float = field(default=1.0, metadata={"help": "weight of the stop-token loss"})
    stop_pos_weight: float = field(default=5.0, metadata={"help": "BCE weight of the positive (final) stop step"})
    # evaluation / synthesis (not part of the model: may differ at evaluate / predict time)
    judge: str | None = field(default=None, metadata={
        "help": "run directory of a `panformer train speech` model: evaluation reports its CER on the synthesised audio"})
    eval_free_max: int = field(default=64, metadata={"help": "utterances per evaluation synthesised free-running"})
    max_decoder_seconds: float = field(default=10.0, metadata={"help": "longest synthesised clip (seconds)"})
    stop_threshold: float = field(default=0.5, metadata={"help": "stop when sigmoid(stop logit) exceeds this"})
    griffin_lim_iters: int = field(default=48, metadata={"help": "Griffin-Lim iterations"})
    griffin_lim_power: float = field(default=1.3, metadata={"help": "magnitude sharpening exponent before Griffin-Lim"})
    out_dir: str | None = field(default=None, metadata={"help": "predict: folder for wav and png files (default: RUN/predictions)"})
    samples: int = field(default=4, metadata={"help": "evaluate --out: utterances written as wav + png"})


PREDICT_FIELDS = ("judge", "eval_free_max", "max_decoder_seconds", "stop_threshold", "griffin_lim_iters",
                  "griffin_lim_power", "out_dir", "samples", "audio_column", "text_column", "max_seconds")
MODEL_FIELDS = tuple(f.name for f in fields(TTSArguments) if f.name not in PREDICT_FIELDS)
