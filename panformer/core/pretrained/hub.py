"""``--pretrained org/name``: a Hugging Face Hub model id resolved to a local folder.

A path that exists is used as it is. Anything else that looks like a Hub id (``name``, ``org/name``,
optionally ``@revision``) is fetched with :func:`huggingface_hub.snapshot_download`, which keeps its
usual behaviour: the cache (``HF_HOME`` / ``HF_HUB_CACHE``), ``HF_HUB_OFFLINE=1`` (cache only), tokens,
mirrors (``HF_ENDPOINT``). Only the files the loaders read are fetched: ``config.json``, the tokenizer
files and safetensors weights, falling back to ``pytorch_model.bin`` when a repository has no
safetensors.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError

__all__ = ["resolve_pretrained", "is_hub_id", "HUB_FILES", "HUB_BIN_FILES"]

HUB_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "vocab.json", "merges.txt", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
HUB_BIN_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")
# the Hub's repo id rules: 1-96 characters of [\w.-] per part, at most one "/", no "--" or ".." anywhere
_HUB_ID = re.compile(r"(?!.*(--|\.\.))[\w.-]{1,96}(/[\w.-]{1,96})?(@[\w./-]+)?")
_resolved: dict[tuple[str, str, bool], Path] = {}


def is_hub_id(name: str) -> bool:
    """True for strings shaped like ``name``, ``org/name`` or ``org/name@revision`` (not ``./x``, ``/x``, ``~``)."""
    return bool(_HUB_ID.fullmatch(name)) and not name.startswith((".", "-")) and not name.endswith(".")


def _has_safetensors(d: Path) -> bool:
    return (d / "model.safetensors").is_file() or (d / "model.safetensors.index.json").is_file()


def resolve_pretrained(name: str | Path) -> Path:
    """A local model folder for ``name``: the path itself when it exists, else a Hub snapshot.

    Raises:
        ConfigError: neither a folder nor a Hub id; the repository or revision does not exist; offline
            (``HF_HUB_OFFLINE=1``) and not in the cache; or the Hub cannot be reached.
    """
    p = Path(name).expanduser()
    if p.exists() or not is_hub_id(str(name)):
        return p  # the loaders report a missing folder themselves
    from huggingface_hub import constants

    key = (str(name), str(constants.HF_HUB_CACHE), bool(constants.HF_HUB_OFFLINE))
    if key not in _resolved:
        _resolved[key] = _download(str(name))
    return _resolved[key]


def _download(spec: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    repo, _, revision = spec.partition("@")
    offline = bool(constants.HF_HUB_OFFLINE)
    where = f"--pretrained {spec}: no such local folder"
    try:
        d = Path(snapshot_download(repo, revision=revision or None, allow_patterns=list(HUB_FILES)))
        if not _has_safetensors(d):  # an older repository: its pickled weights (read with weights_only=True)
            d = Path(snapshot_download(repo, revision=revision or None, allow_patterns=list(HUB_FILES + HUB_BIN_FILES)))
    except GatedRepoError:
        raise ConfigError(f"{where}, and the Hub repository {repo!r} is gated: accept its terms on huggingface.co "
                          "and log in (`hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{where}, and the Hub repository {repo!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{where}, and no Hub repository {repo!r} exists (or it is private: log in with "
                          "`hf auth login` or HF_TOKEN)") from None
    except LocalEntryNotFoundError as e:
        if offline:
            raise ConfigError(f"{where}, and {repo!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                              "while HF_HUB_OFFLINE=1: download it once online, or pass a local folder") from None
        raise ConfigError(f"{where}, and the Hugging Face Hub could not be reached for {repo!r} "
                          f"({_first_line(e)}); check the network or HF_ENDPOINT, or pass a local folder") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise ConfigError(f"{where}; fetching {repo!r} from the Hugging Face Hub failed: {type(e).__name__}: "
                          f"{_first_line(e)}") from None
    if not (d / "config.json").is_file():
        raise ConfigError(f"--pretrained {spec}: the Hub repository has no config.json; is it a transformers model?")
    return d


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
