"""User-facing errors.

Anything raised as :class:`PanformerError` (or a subclass) is a problem with the user's input or
set-up, not a bug: the CLI prints its message as one line and exits with status 2.
"""
from __future__ import annotations

__all__ = ["PanformerError", "DataError", "ConfigError", "PeerError"]


class PanformerError(Exception):
    """Base class of errors that are reported to the user as one actionable line."""


class DataError(PanformerError):
    """Bad or missing input data: names the file, column or example and what was expected."""


class ConfigError(PanformerError):
    """An invalid option, config file or run directory."""


class PeerError(PanformerError):
    """Another process of a multi-process (``torchrun``) run failed; the message names its rank and error."""
