"""The backend interface every inference backend implements."""

from __future__ import annotations

import abc

import numpy as np

from sensors.errors import BackendUnavailable

__all__ = ["Backend", "BackendUnavailable"]


class Backend(abc.ABC):
    """Runs one model; closed with ``close()`` or as a context manager."""

    #: what is actually used, e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"]
    providers: list[str]

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on named inputs and return its outputs in manifest order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session or engine."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
