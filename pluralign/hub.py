"""Where a named model comes from, checked before any work: a local directory or the hub cache.

Every command names models (a base pipeline, a judge, an LLM rewriter). Offline, a model that is
not cached fails inside the library that loads it, after whatever work came first, with a chain of
tracebacks; checked up front, it is one line saying what to download and how. This module imports
nothing from pluralign, so every layer can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

# hub repos whose files are behind a licence gate: downloading needs the licence accepted and a login
GATED = ("black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-medium",
         "stabilityai/stable-diffusion-3.5-large")


class ModelNotFound(ValueError):
    """A model named by hub id is not on this machine and the hub is offline; the message says how to get it."""


def hub_offline() -> bool:
    """Whether hub downloads are switched off (``HF_HUB_OFFLINE``), read now rather than at import."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def looks_local(spec: str) -> bool:
    """A path, not a hub id ("org/name"): absolute, relative with ./ or ../, ~, or more than one /."""
    return spec.startswith(("/", "./", "../", "~", ".\\")) or spec.count("/") > 1 or "\\" in spec


def require_model(spec: str, what: str, *, revision: str | None = None, local_option: str | None = None,
                  cache_dir: str | Path | None = None) -> str:
    """Where model ``spec`` (a local path or a hub id) will load from, checked before any work.

    Returns the local directory (or file) for a path or a hub id in the hub cache. For a hub id that
    is not cached, returns ``spec`` itself when the hub is reachable (the loader downloads it), and
    raises :class:`ModelNotFound` when the hub is offline: that load would fail only after whatever
    work came before it, with a chain of library tracebacks. The message says what to download and
    how (the licence gate of a gated repo included), or which option takes a local directory
    (``local_option``, e.g. ``--base DIR``). ``what`` names the model's role in messages ("base").
    A local-looking path that does not exist raises FileNotFoundError."""
    path = Path(spec).expanduser()
    if spec and path.exists():
        return str(path)
    if not spec or looks_local(spec):
        raise FileNotFoundError(f"{what} {spec!r}: no such file or directory; pass an existing local directory "
                                "or a hub id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(spec, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except HFValidationError:
        raise FileNotFoundError(f"{what} {spec!r}: no such file or directory, and not a hub id (org/name)") from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if not hub_offline():
        return spec
    at = f" --revision {revision}" if revision else ""
    gate = (f" (a gated model: first accept its licence at https://huggingface.co/{spec}, then `hf auth login`)"
            if spec in GATED else "")
    local = f" ({local_option})" if local_option else ""
    raise ModelNotFound(
        f"{what} {spec} is not on this machine and the hub is offline (HF_HUB_OFFLINE=1). Download it where the hub "
        f"is reachable with `hf download {spec}{at}`{gate} and unset HF_HUB_OFFLINE or copy the hub cache here; "
        f"or pass a local directory{local}")
