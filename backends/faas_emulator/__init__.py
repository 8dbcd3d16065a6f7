"""A local AWS Lambda: the Invoke API over HTTP, with real execution environments and cold starts.

Each function runs the ONNX batch handler (backends/lambda_function/handler.py) in
environments that are separate processes, started on demand (a cold start: process,
import, model load), reused while warm and reclaimed after a keep-alive. Throttling,
timeouts, payload limits, function errors, the Tail log and per-ms GB-second metering
behave as on AWS, so the gateway's serverless path can be tested and costed locally
with an unmodified boto3 client pointed at `endpoint_url`.

    emulator = FaasEmulator([FunctionConfig("demo", "model.onnx")], port=0)
    await emulator.start()   # emulator.port is bound
    ...
    await emulator.stop()    # every environment process is gone
"""

from .config import DEFAULT_HANDLER, PAYLOAD_LIMIT_BYTES, FunctionConfig
from .emulator import FaasEmulator
from .metrics import EmulatorMetrics
from .pool import FunctionPool, Invocation, PoolStopped, Throttled

__all__ = [
    "DEFAULT_HANDLER",
    "PAYLOAD_LIMIT_BYTES",
    "EmulatorMetrics",
    "FaasEmulator",
    "FunctionConfig",
    "FunctionPool",
    "Invocation",
    "PoolStopped",
    "Throttled",
]
