"""A client we did not write, tritonclient[http], against the gateway."""

from __future__ import annotations

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(gateway):
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{gateway.port}", network_timeout=30)
    yield c
    c.close()


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("demo")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("demo")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_server_metadata()["name"] == "sluice"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer(client, reference, binary):
    x = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("demo", [tensor], outputs=[wanted], request_id="r1")
    np.testing.assert_allclose(result.as_numpy("y"), reference(x), rtol=1e-4, atol=1e-5)
    assert result.get_response()["id"] == "r1"
    # Without asking for outputs, every output comes back.
    result = client.infer("demo", [tensor])
    np.testing.assert_allclose(result.as_numpy("y"), reference(x), rtol=1e-4, atol=1e-5)


def test_errors_reach_the_client(client):
    bad = httpclient.InferInput("x", [1, 4], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 4), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("demo", [bad])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
