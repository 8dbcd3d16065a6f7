"""What every backend offers, and the two ways a backend can fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from .metadata import ModelMetadata


class BackendError(Exception):
    """The backend answered, but not with a result: the batch's requests get this error."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class BackendUnavailable(BackendError):
    """The backend could not be reached or gave up (connection lost, timeout, 503):
    the batch never ran there, so it may be retried on another instance."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message, status)


class Backend(Protocol):
    """One place a batch can run: a worker process, an upstream server, a function."""

    name: str

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run one whole batch; raise BackendError or BackendUnavailable. `deadline`
        (time.monotonic()), when given, bounds any retrying the backend does itself."""
        ...

    async def metadata(self) -> ModelMetadata: ...

    async def ready(self) -> bool: ...
