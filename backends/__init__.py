"""Where batches run: local ONNX worker processes, HTTP V2 upstreams, AWS Lambda functions
(and `sluice faas-emulator`, a local stand-in for Lambda), and their pools."""

from .base import Backend, BackendError, BackendUnavailable
from .worker.demo import DEMO_NAME, build_demo_model, demo_model_path
from .faas_pool import FaasPool
from .http_v2 import HttpV2Backend, Transport
from .lambda_backend import FaasThrottled, InvocationReport, LambdaBackend, Report
from .local_pool import LocalWorkerPool
from .metadata import ModelMetadata, TensorSpec
from .oip import InferRequest, ProtocolError, decode_request, decode_response, encode_request, encode_response
from .worker.membership import Membership
from .mixed_pool import MixedPool
from .pool import Instance, Pool, ScalablePool, UpstreamPool, scalable
from .registered_pool import RegisteredPool
from .wire import AiohttpTransport, HttpResponse, TransportError, WireTransport

__all__ = [
    "AiohttpTransport",
    "HttpResponse",
    "Transport",
    "TransportError",
    "WireTransport",
    "DEMO_NAME",
    "Backend",
    "FaasPool",
    "FaasThrottled",
    "InvocationReport",
    "LambdaBackend",
    "Report",
    "BackendError",
    "BackendUnavailable",
    "HttpV2Backend",
    "InferRequest",
    "Instance",
    "LocalWorkerPool",
    "Membership",
    "MixedPool",
    "RegisteredPool",
    "ScalablePool",
    "scalable",
    "ModelMetadata",
    "Pool",
    "ProtocolError",
    "TensorSpec",
    "UpstreamPool",
    "build_demo_model",
    "decode_request",
    "decode_response",
    "demo_model_path",
    "encode_request",
    "encode_response",
]
