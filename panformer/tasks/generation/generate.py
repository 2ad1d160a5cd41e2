"""Generation beyond the context window: moved to :func:`core.decoding.generate` (shared with the
``music`` task); re-exported here for backward compatibility."""
from panformer.core.decoding import generate

__all__ = ["generate"]
