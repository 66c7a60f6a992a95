"""Where inference backends cache what they build (TensorRT engines): folders of the agent's state directory.

A backend config names its cache field and its folder; :func:`cache_path` is the one place that turns
them and a state directory into a path, so the caches follow ``state_dir`` unless set explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["DEFAULT_STATE_DIR", "cache_path", "under_state_dir"]

#: the agent's state directory unless its config says otherwise (the systemd unit's StateDirectory=)
DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")

B = TypeVar("B", bound=BaseModel)


def cache_path(config: Any, state_dir: Path | None = None) -> Path:
    """A backend config's cache folder: as set, else its ``cache_folder`` in ``state_dir`` (default
    :data:`DEFAULT_STATE_DIR`)."""
    explicit: Path | None = getattr(config, config.cache_field)
    return explicit if explicit is not None else (state_dir or DEFAULT_STATE_DIR) / config.cache_folder


def under_state_dir(config: B, state_dir: Path) -> B:
    """The backend settings with an unset cache folder placed in ``state_dir``; a backend without a cache
    (no ``cache_field``) is returned as is."""
    field: str | None = getattr(type(config), "cache_field", None)
    if field is None:
        return config
    return config.model_copy(update={field: cache_path(config, state_dir)})
