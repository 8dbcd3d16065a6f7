"""A backend that speaks Open Inference Protocol V2 over HTTP.

It serves Sluice's own workers (the lean wire transport, binary tensors both
ways) and any server that speaks the protocol: Triton, MLServer, KServe (aiohttp,
JSON tensors by default, since not every server implements the binary extension).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import orjson

from .base import BackendError, BackendUnavailable
from .metadata import ModelMetadata
from .oip import HEADER_LENGTH, ProtocolError, decode_response, encode_request
from .wire import HttpResponse, TransportError

_RETRYABLE = {502, 503, 504}


class Transport(Protocol):
    timeout_s: float

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse: ...  # fmt: skip

    async def close(self) -> None: ...


class HttpV2Backend:
    def __init__(self, transport: Transport, model: str, *, binary: bool = False, name: str) -> None:
        self.transport = transport
        self.model = model
        self.name = name
        self._binary = binary
        self._infer_path = f"/v2/models/{model}/infer"

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        body, header_length = encode_request(inputs, outputs, binary=self._binary)
        headers = {"Content-Type": "application/octet-stream" if header_length is not None else "application/json"}
        if header_length is not None:
            headers[HEADER_LENGTH] = str(header_length)
        resp = await self._request("POST", self._infer_path, body, headers)
        if resp.status != 200:
            message = _error_message(resp.body) or "error"
            error = BackendUnavailable if resp.status in _RETRYABLE else BackendError
            raise error(f"{self.name} answered {resp.status}: {message}")
        length = resp.headers.get(HEADER_LENGTH.lower())
        try:
            return decode_response(resp.body, int(length) if length is not None else None)
        except (ProtocolError, ValueError) as exc:
            raise BackendError(f"{self.name} sent a bad response: {exc}") from exc

    async def metadata(self) -> ModelMetadata:
        resp = await self._request("GET", f"/v2/models/{self.model}")
        if resp.status != 200:
            raise BackendError(f"{self.name} answered {resp.status} for the metadata of {self.model!r}")
        try:
            return ModelMetadata.from_json(orjson.loads(resp.body))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"{self.name} sent bad metadata: {exc}") from exc

    async def ready(self) -> bool:
        try:
            return (await self._request("GET", f"/v2/models/{self.model}/ready", timeout_s=2.0)).status == 200
        except BackendUnavailable:
            return False

    async def _request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                       timeout_s: float | None = None) -> HttpResponse:  # fmt: skip
        try:
            return await self.transport.request(method, path, body, headers, timeout_s)
        except TimeoutError as exc:  # first: TimeoutError (asyncio's too, since 3.11) is an OSError
            limit = timeout_s or self.transport.timeout_s
            raise BackendUnavailable(f"{self.name} timed out after {limit} s", status=504) from exc
        except (TransportError, OSError) as exc:
            raise BackendUnavailable(f"{self.name} unreachable: {exc}") from exc


def _error_message(payload: bytes) -> str | None:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode("utf-8", "replace") or None
    return str(doc.get("error")) if isinstance(doc, dict) and "error" in doc else None
