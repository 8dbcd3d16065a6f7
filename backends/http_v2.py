"""A backend that speaks Open Inference Protocol V2 over HTTP.

It serves Sluice's own workers (binary tensors both ways) and any server that
speaks the protocol: Triton, MLServer, KServe (JSON tensors by default, since not
every server implements the binary extension).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import aiohttp
import numpy as np
import orjson

from .base import BackendError, BackendUnavailable
from .metadata import ModelMetadata
from .oip import HEADER_LENGTH, ProtocolError, decode_response, encode_request

_RETRYABLE = {502, 503, 504}


class HttpV2Backend:
    def __init__(
        self,
        base_url: str,
        model: str,
        session: aiohttp.ClientSession,
        *,
        binary: bool = False,
        timeout_s: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or self.base_url
        self._session = session
        self._binary = binary
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._infer_url = f"{self.base_url}/v2/models/{model}/infer"

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        body, header_length = encode_request(inputs, outputs, binary=self._binary)
        headers = {"Content-Type": "application/octet-stream" if header_length is not None else "application/json"}
        if header_length is not None:
            headers[HEADER_LENGTH] = str(header_length)
        try:
            async with self._session.post(self._infer_url, data=body, headers=headers, timeout=self._timeout) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    message = _error_message(payload) or resp.reason or "error"
                    error = BackendUnavailable if resp.status in _RETRYABLE else BackendError
                    raise error(f"{self.name} answered {resp.status}: {message}")
                length = resp.headers.get(HEADER_LENGTH)
                return decode_response(payload, int(length) if length is not None else None)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise BackendUnavailable(f"{self.name} unreachable: {exc.__class__.__name__}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise BackendUnavailable(f"{self.name} timed out after {self._timeout.total} s", status=504) from exc
        except ProtocolError as exc:
            raise BackendError(f"{self.name} sent a bad response: {exc}") from exc

    async def metadata(self) -> ModelMetadata:
        url = f"{self.base_url}/v2/models/{self.model}"
        try:
            async with self._session.get(url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise BackendError(f"{url} answered {resp.status}")
                return ModelMetadata.from_json(await resp.json())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(f"{self.name} unreachable: {exc}") from exc

    async def ready(self) -> bool:
        try:
            async with self._session.get(
                f"{self.base_url}/v2/models/{self.model}/ready", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def _error_message(payload: bytes) -> str | None:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode("utf-8", "replace") or None
    return str(doc.get("error")) if isinstance(doc, dict) and "error" in doc else None
