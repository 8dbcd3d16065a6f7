"""A lean HTTP/1.1 client for Sluice's own workers.

The gateway sends every batch to a worker; with aiohttp's general-purpose client
that hop cost more CPU than the inference itself. Our workers are a known peer
(keep-alive, Content-Length bodies, one batch at a time), so this client does only
that: a few reusable keep-alive connections, one request per connection at a time.
Anything else (chunked bodies, redirects, TLS) is for `AiohttpTransport`.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import aiohttp
from yarl import URL


class TransportError(ConnectionError):
    """The connection failed or the peer answered in a way this client does not speak."""


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str], int] | None = None
        self._waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TransportError(f"connection lost: {exc or 'closed by peer'}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            try:
                self._complete()
            except TransportError as exc:
                self._waiter.set_exception(exc)
                self.transport.close()

    def _complete(self) -> None:
        buf = self._buffer
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise TransportError(f"bad status line {lines[0]!r}")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                raise TransportError("chunked responses are not supported by this client")
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise TransportError("bad Content-Length") from None
            self._head = (int(parts[1]), headers, length)
        status, headers, length = self._head
        if len(buf) < length:
            return
        body = bytes(buf[:length])
        del buf[:length]
        self._head = None
        self._waiter.set_result(HttpResponse(status, headers, body))

    async def exchange(self, request: bytes) -> HttpResponse:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None


class WireTransport:
    """Keep-alive connections to one host:port, reused one request at a time."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        url = URL(base_url)
        if url.scheme != "http" or not url.host:
            raise ValueError(f"the wire transport speaks plain http only, not {base_url!r}")
        self.host, self.port, self.timeout_s = url.host, url.port or 80, timeout_s
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: list[_Connection] = []

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      timeout_s: float | None = None) -> HttpResponse:  # fmt: skip
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._host_header, b"Content-Length: %d" % len(body)]
        head += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
        conn = await self._connection()
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                response = await conn.exchange(request)
        except BaseException:
            conn.transport.abort()  # its state is unknown: never reuse it
            raise
        if response.headers.get("connection", "").lower() == "close" or conn.closed:
            conn.transport.close()
        else:
            self._idle.append(conn)
        return response

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()


class AiohttpTransport:
    """Any HTTP server, through aiohttp's client (upstreams we do not control)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self.base_url, self._session, self.timeout_s = base_url.rstrip("/"), session, timeout_s

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      timeout_s: float | None = None) -> HttpResponse:  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._session.request(method, self.base_url + path, data=body or None, headers=headers,
                                             timeout=timeout) as resp:  # fmt: skip
                payload = await resp.read()
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, payload)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TransportError(f"{exc.__class__.__name__}: {exc}") from exc

    async def close(self) -> None:
        pass  # the session belongs to the pool
