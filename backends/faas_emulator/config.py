"""One emulated function's settings, checked once so that a bad flag fails at startup."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HANDLER = Path(__file__).resolve().parents[1] / "lambda_function" / "handler.py"
ACCOUNT = "000000000000"
REGION = "us-east-1"
# AWS's limit for a synchronous invocation's request and response payloads.
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
VCPU_MB = 1769  # AWS: a function gets one vCPU's worth of CPU at 1769 MB of memory
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


@dataclass(frozen=True)
class FunctionConfig:
    """A function as AWS would configure it: code (handler + model), memory, concurrency, timeouts.

    `keep_alive_s` stands in for AWS's undocumented idle lifetime of a warm environment;
    `init_timeout_s` is AWS's 10 s limit on the init phase of a cold start.
    """

    name: str
    model_path: str
    handler_path: str = str(DEFAULT_HANDLER)
    memory_mb: int = 1024
    max_concurrency: int = 10
    keep_alive_s: float = 600.0
    timeout_s: float = 30.0
    init_timeout_s: float = 10.0
    environment: tuple[tuple[str, str], ...] = ()  # the function's environment variables

    @property
    def cpu_share(self) -> float:
        """Lambda gives CPU in proportion to memory: one vCPU at 1769 MB."""
        return self.memory_mb / VCPU_MB

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"function name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not os.path.isfile(self.model_path):
            raise ValueError(f"function {self.name!r}: no model file at {self.model_path}")
        if not os.path.isfile(self.handler_path):
            raise ValueError(f"function {self.name!r}: no handler file at {self.handler_path}")
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError(f"memory {self.memory_mb} MB: AWS allows 128 to 10240 MB")
        if self.max_concurrency < 1:
            raise ValueError(f"max concurrency {self.max_concurrency}: must be at least 1")
        for field in ("keep_alive_s", "timeout_s", "init_timeout_s"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field.replace('_', '-')} must be positive")

    @property
    def arn(self) -> str:
        return function_arn(self.name)
