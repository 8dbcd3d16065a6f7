"""Where captured records go: a directory of JSON-lines files, or S3 objects.

Both are written by the capture's own thread (`gateway.capture.writer`), never on the
event loop: a write that blocks (a stalled disk, an S3 endpoint that does not answer)
holds that thread only, and the bounded queue in front of it drops and counts what does
not fit. A sink tells its `report` what it wrote and what it lost.

- `file://DIR`: this replica's active file `<model>-<version>-<replica>.jsonl`; when it
  passes `max_file_mb`, or is `max_file_age_s` old, it is renamed with the UTC time it
  closed (`...-20261207T051500.123456Z.jsonl`) and a new one begun; at stop, too.
- `s3://BUCKET/PREFIX`: records are gathered in memory and uploaded as one object at the
  same size or age, `PREFIX/<model>/<version>/YYYY/MM/DD/HH/<replica>-<time>-<n>.jsonl`,
  through boto3 (credentials, region and endpoint from its usual chain: environment,
  files, instance role; AWS_ENDPOINT_URL_S3 for an S3-compatible server).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

log = logging.getLogger("sluice.capture")


class Report(Protocol):
    def written(self, records: int, nbytes: int) -> None: ...

    def failed(self, records: int, error: BaseException) -> None: ...


class Sink(Protocol):
    def write(self, lines: list[bytes], now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def close(self) -> None: ...


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class FileSink:
    def __init__(self, directory: Path, stem: str, max_bytes: int, max_age_s: float, report: Report) -> None:
        self.directory, self.stem, self.max_bytes, self.max_age_s, self.report = directory, stem, max_bytes, max_age_s, report
        self.active = directory / f"{stem}.jsonl"
        self._file = None
        self._size = 0
        self._opened = 0.0

    def write(self, lines: list[bytes], now: float) -> None:
        """Append `lines`, beginning a new file where one would pass `max_file_mb`."""
        i = 0
        while i < len(lines):
            try:
                if self._file is None:
                    self._open(now)
                j, taken = i, 0
                while j < len(lines) and (j == i or self._size + taken + len(lines[j]) <= self.max_bytes):
                    taken += len(lines[j])
                    j += 1
                if self._size and self._size + taken > self.max_bytes:  # not even one more line fits
                    self._rotate()
                    continue
                self._file.write(b"".join(lines[i:j]))
                self._file.flush()
            except OSError as exc:
                self._drop_file()
                self.report.failed(len(lines) - i, exc)
                return
            self._size += taken
            self.report.written(j - i, taken)
            i = j
            if self._size >= self.max_bytes:
                self._rotate()

    def tick(self, now: float) -> None:
        if self._file is not None and self._size > 0 and now - self._opened >= self.max_age_s:
            self._rotate()

    def close(self) -> None:
        if self._file is not None:
            self._rotate()

    def _open(self, now: float) -> None:
        # Blocks on a FIFO until a reader comes, or on a stalled mount: on this thread only.
        self._file = open(self.active, "ab")
        self._opened = now
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size and self.active.is_file():
            with open(self.active, "rb") as f:  # a line a failed write left unfinished ends here
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write(b"\n")
                    self._size += 1

    def _drop_file(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None

    def _rotate(self) -> None:
        """Close the active file under its final name."""
        self._drop_file()
        if not self.active.is_file() or self.active.stat().st_size == 0:
            return
        target = self.directory / f"{self.stem}-{_utc_stamp()}.jsonl"
        try:
            os.rename(self.active, target)
        except OSError as exc:
            log.warning("could not rotate the capture file", extra={"file": str(self.active), "error": str(exc)})


class S3Sink:
    def __init__(self, client, bucket: str, prefix: str, model: str, version: str, replica: str,
                 max_bytes: int, max_age_s: float, report: Report) -> None:  # fmt: skip
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.model, self.version, self.replica = model, version, replica
        self.max_bytes, self.max_age_s, self.report = max_bytes, max_age_s, report
        self._lines: list[bytes] = []
        self._size = 0
        self._started = 0.0
        self._sequence = 0

    def write(self, lines: list[bytes], now: float) -> None:
        if not self._lines:
            self._started = now
        self._lines.extend(lines)
        self._size += sum(len(line) for line in lines)
        if self._size >= self.max_bytes:
            self._upload()

    def tick(self, now: float) -> None:
        if self._lines and now - self._started >= self.max_age_s:
            self._upload()

    def close(self) -> None:
        if self._lines:
            self._upload()

    def key(self) -> str:
        self._sequence += 1
        hour = datetime.now(timezone.utc).strftime("%Y/%m/%d/%H")
        name = f"{self.model}/{self.version}/{hour}/{self.replica}-{_utc_stamp()}-{self._sequence:06d}.jsonl"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _upload(self) -> None:
        body, count = b"".join(self._lines), len(self._lines)
        self._lines, self._size = [], 0
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(), Body=body, ContentType="application/x-ndjson")
        except Exception as exc:  # botocore's errors, and any a stalled connection raises
            self.report.failed(count, exc)
            return
        self.report.written(count, len(body))


def s3_client(check_bucket: str | None = None):
    """A client with bounded waits (a stalled endpoint holds the capture thread for
    seconds, not minutes); given `check_bucket`, that bucket must exist and answer."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2}))
        if check_bucket is not None:
            client.head_bucket(Bucket=check_bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ValueError(f"bucket {check_bucket!r} does not exist") from None
        raise ValueError(f"bucket {check_bucket!r}: {exc}") from None
    except BotoCoreError as exc:  # no credentials, no endpoint, a bad profile
        raise ValueError(f"cannot reach S3 for bucket {check_bucket!r}: {exc}") from None
    return client


def open_sink(destination: str, model: str, version: str, replica: str, max_bytes: int, max_age_s: float,
              report: Report) -> Sink:  # fmt: skip
    """The destination's sink, after checking that it exists and can be written (S3: a
    request to the bucket; blocking, so called off the event loop)."""
    stem = "-".join((model, version, replica))
    if destination.startswith("s3://"):
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        return S3Sink(s3_client(bucket), bucket, prefix, model, version, replica, max_bytes, max_age_s, report)
    directory = Path(destination.removeprefix("file://"))
    if not directory.is_dir():
        raise ValueError(f"{str(directory)!r} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"directory {str(directory)!r} cannot be written")
    return FileSink(directory, stem, max_bytes, max_age_s, report)

