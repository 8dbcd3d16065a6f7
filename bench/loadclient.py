"""The load generator's HTTP/1.1 client: pre-built requests, a minimal response
parser, and a pool of keep-alive connections.

Kept apart from the generator's scheduling and statistics (bench/loadgen.py): this
is the part that must cost as little CPU as possible per request.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Mapping, Sequence
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TIMEOUT, CONN_ERROR = 0, -1
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def build_request(url: str, method: str = "POST", body: bytes = b"",
                  headers: Mapping[str, str] | Sequence[str] | None = None,
                  content_type: str = "application/json") -> tuple[str, int, bytes]:
    """Validate the target and return (host, port, request bytes); built once per run."""
    parts = urlsplit(url)
    host, method = parts.hostname or "", method.upper()
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing non-loopback host {host!r}; allowed: {sorted(LOOPBACK_HOSTS)}")
    if method == "GET" and body:
        raise ValueError("GET requests cannot carry a body")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    hdrs = {"host": ("Host", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"),
            "connection": ("Connection", "keep-alive")}
    if method != "GET":
        hdrs["content-type"] = ("Content-Type", content_type)
    pairs = headers.items() if isinstance(headers, Mapping) else (
        tuple(x.strip() for x in h.split(":", 1)) for h in headers or ())
    for pair in pairs:
        if len(pair) != 2 or not pair[0] or any(c in "".join(pair) for c in "\r\n"):
            raise ValueError(f"bad header {pair!r}; expected 'Name: value'")
        if pair[0].lower() == "content-length":
            raise ValueError("Content-Length is computed from the body")
        hdrs[pair[0].lower()] = pair
    if method != "GET":
        hdrs["content-length"] = ("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.values())
    return host, port, head.encode("latin-1") + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, whether the connection can be reused)."""
    lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
    version, code = lines[0].split(b" ", 2)[:2]
    status, length, chunked, keep = int(code), None, False, version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep = b"close" not in value and (keep or b"keep-alive" in value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # optional trailers
            pass
    elif length is not None:
        await reader.readexactly(length)
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # body delimited by connection close
        keep = False
    return status, keep


class ConnPool:
    """Keep-alive connections: reuse an idle one, else open one up to the cap, else queue."""

    def __init__(self, host: str, port: int, cap: int) -> None:
        self.host, self.port, self.cap = host, port, cap
        self.idle: list[Conn] = []
        self.waiters: deque[asyncio.Future] = deque()
        self.open = self.peak = 0

    async def acquire(self) -> Conn:
        if self.idle:
            conn = self.idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn
            conn[1].transport.abort()  # the server closed it while idle; reuse its slot
            return await self._connect()
        if self.open < self.cap:
            self.open += 1
            self.peak = max(self.peak, self.open)
            return await self._connect()
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            conn = await fut
        except BaseException:
            if fut.done() and not fut.cancelled():  # handed over just as we were cancelled
                if fut.result() is None:
                    self._free_slot()
                else:
                    self.release(fut.result())
            raise
        return conn if conn is not None else await self._connect()

    async def _connect(self) -> Conn:
        """Open a connection on a slot the caller already holds in self.open."""
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self._free_slot()
            raise

    def _hand_over(self, conn: Conn | None) -> bool:
        """Give a connection (None: a connection slot) to the oldest still-waiting request."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    def _free_slot(self) -> None:
        if not self._hand_over(None):  # a waiter inherits the slot, so the count stays
            self.open -= 1

    def release(self, conn: Conn) -> None:
        if not self._hand_over(conn):
            self.idle.append(conn)

    def discard(self, conn: Conn) -> None:
        conn[1].transport.abort()
        self._free_slot()

    def close_all(self) -> None:
        for _, writer in self.idle:
            writer.transport.abort()
        self.idle.clear()
