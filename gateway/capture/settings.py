"""`[models.<name>.capture]`: its settings and their checks (light: the config loads it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEEP = ("inputs", "outputs", "both")


@dataclass(frozen=True)
class CaptureConfig:
    """`[models.<name>.capture]`."""

    destination: str = ""  # file://DIR or s3://BUCKET/PREFIX
    fraction: float = 0.01  # of requests, sampled at random
    errors: bool = False  # also every error answer (status >= 400), sampled or not
    keep: str = "both"  # inputs | outputs | both
    max_file_mb: float = 64.0  # a file (an S3 object) is closed at this size ...
    max_file_age_s: float = 300.0  # ... or this age, whichever comes first
    queue_mb: float = 16.0  # records waiting for the destination, at most; more are dropped
    flush_timeout_s: float = 10.0  # at stop, how long the destination may take to take the rest

    def check(self, model: str) -> None:
        where = f"model {model!r}: [capture]"
        if not self.destination.startswith(("file://", "s3://")):
            raise ValueError(f"{where} destination {self.destination!r} must be file://DIR or s3://BUCKET/PREFIX")
        if self.destination.startswith("s3://") and not self.destination.removeprefix("s3://").split("/")[0]:
            raise ValueError(f"{where} destination {self.destination!r} names no bucket")
        if self.destination.startswith("file://"):
            directory = Path(self.destination.removeprefix("file://"))
            if not directory.is_dir():
                raise ValueError(f"{where} destination {self.destination!r}: {str(directory)!r} is not a directory")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"{where} fraction = {self.fraction!r} must be between 0 and 1")
        if self.keep not in KEEP:
            raise ValueError(f"{where} keep = {self.keep!r} must be one of {', '.join(KEEP)}")
        if self.max_file_mb <= 0 or self.max_file_age_s <= 0 or self.queue_mb <= 0 or self.flush_timeout_s < 0:
            raise ValueError(f"{where} max_file_mb, max_file_age_s and queue_mb must be positive, flush_timeout_s not negative")
