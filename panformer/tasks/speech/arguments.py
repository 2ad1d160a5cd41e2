"""Options of the ``speech`` task and transcript normalisation."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

__all__ = ["SpeechArguments", "DEFAULT_ALPHABET", "normalize_transcript", "MODEL_FIELDS"]

DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
_PUNCT = re.compile(r"[.,!?;:\"“”‘’()\[\]{}]|(?<!\w)-|-(?!\w)")


def normalize_transcript(text: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """NFKC, lowercase, punctuation (not apostrophes or in-word hyphens) removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


@dataclass
class SpeechArguments:
    # data
    builtin_size: int = field(default=3000, metadata={"help": "utterances of built-in espeak-ng speech (without --data)"})
    builtin_kind: str = field(default="mixed", metadata={"help": "built-in speech: digits | phrases | mixed"})
    builtin_seed: int = field(default=0, metadata={"help": "seed of the built-in speech synthesis (texts, voices, rates, pitches)"})
    fsdd_mode: str = field(default="connected", metadata={
        "help": "FSDD folders: connected (1-5 recorded digits of one speaker joined with short gaps) | single"})
    connected_repeats: int = field(default=3, metadata={"help": "FSDD connected mode: times each training recording is used"})
    connected_max_digits: int = field(default=5, metadata={"help": "FSDD connected mode: most digits per utterance"})
    test_speakers: str | None = field(default=None, metadata={
        "help": "comma-separated speakers held out as the test split (seen speakers' held-out clips become 'test_seen')"})
    audio_column: str | None = field(default=None, metadata={"help": "manifest / dataset audio column (default: file_name, path, audio, ...)"})
    text_column: str | None = field(default=None, metadata={"help": "transcript column (default: transcription, text, sentence, ...)"})
    speaker_column: str | None = field(default=None, metadata={"help": "speaker column (default: speaker_id, speaker, client_id if present)"})
    alphabet: str = field(default=DEFAULT_ALPHABET, metadata={
        "help": "characters the model writes (after normalisation); 'auto': those of the training transcripts"})
    units: str = field(default="char", metadata={
        "help": "what the model writes: char (one unit per character of --alphabet) | bpe (SentencePiece-style BPE "
                "learned on the training transcripts, at most --vocab-size units, as fairseq's and ESPnet's speech "
                "recipes use; --lexicon needs char)"})
    vocab_size: int = field(default=256, metadata={"help": "--units bpe: most units (specials and characters included)"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase transcripts"})
    strip_punctuation: bool = field(default=True, metadata={"help": "remove punctuation from transcripts"})
    max_seconds: float = field(default=30.0, metadata={"help": "reject clips longer than this (seconds)"})
    # front end
    sample_rate: int = field(default=16000, metadata={"help": "common sample rate (Hz); audio is resampled to it"})
    n_mels: int = field(default=80, metadata={"help": "log-mel bins"})
    win_ms: float = field(default=25.0, metadata={"help": "analysis window (ms)"})
    hop_ms: float = field(default=10.0, metadata={"help": "frame hop (ms); the encoder runs at 4x this"})
    speed_perturb: float = field(default=0.0, metadata={
        "help": "training audio plays at a random speed in [1 - x, 1 + x] (tempo and pitch together, as Kaldi's speed "
                "perturbation; one factor per training utterance and copy, drawn from --seed); 0 = off"})
    speed_copies: int = field(default=1, metadata={
        "help": "with --speed-perturb: featurise the training split this many times, each copy at new speeds"})
    vtlp: float = field(default=0.0, metadata={
        "help": "vocal tract length perturbation: each training utterance's frequency axis is scaled by a new random "
                "factor in [1 - x, 1 + x] every time it is seen (Jaitly & Hinton 2013; e.g. 0.1); 0 = off"})
    spec_freq_masks: int = field(default=2, metadata={"help": "SpecAugment frequency masks per utterance (training only)"})
    spec_freq_width: int = field(default=15, metadata={"help": "SpecAugment: widest frequency mask (mel bins)"})
    spec_time_masks: int = field(default=2, metadata={"help": "SpecAugment time masks per utterance"})
    spec_time_width: float = field(default=0.05, metadata={"help": "SpecAugment: widest time mask, fraction of the utterance"})
    # model
    d_model: int = field(default=144, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=6, metadata={"help": "encoder layers"})
    d_ff: int = field(default=576, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    conv_channels: int = field(default=64, metadata={"help": "channels of the 4x convolutional subsampling"})
    arch: str = field(default="transformer", metadata={
        "help": "encoder after the subsampling: transformer | lstm | gru (baselines: bidirectional, d_model wide, n_layers deep)"})
    ctc_weight: float = field(default=1.0, metadata={
        "help": "weight of CTC in the loss; below 1 adds an attention decoder trained jointly (hybrid CTC/attention)"})
    decoder_layers: int = field(default=2, metadata={"help": "attention decoder layers (when --ctc-weight < 1)"})
    # decoding
    decode: str = field(default="greedy", metadata={
        "help": "greedy (CTC best path) | beam (CTC prefix beam search) | attention (decoder beam search) | "
                "joint (N-best of both rescored by ctc_weight x CTC + (1 - ctc_weight) x attention)"})
    beam_size: int = field(default=8, metadata={"help": "beam width of beam / attention / joint decoding"})
    lexicon: str = field(default="none", metadata={
        "help": "--decode beam spells only words of a list: none | train (the training transcripts' words, kept "
                "in the run as lexicon.txt) | FILE (one word per line)"})
    baseline: bool = field(default=False, metadata={"help": "also fit MFCC statistics + SVM (whole-utterance classes)"})


MODEL_FIELDS = ("builtin_size", "builtin_kind", "builtin_seed", "fsdd_mode", "connected_repeats", "connected_max_digits",
                "test_speakers", "alphabet", "units", "vocab_size", "lowercase", "strip_punctuation", "sample_rate", "n_mels", "win_ms",
                "hop_ms", "speed_perturb", "speed_copies", "vtlp", "spec_freq_masks", "spec_freq_width", "spec_time_masks", "spec_time_width", "arch", "d_model",
                "n_heads", "n_layers", "d_ff", "dropout", "conv_channels", "ctc_weight", "decoder_layers",
                "audio_column", "text_column", "speaker_column", "max_seconds", "baseline")
