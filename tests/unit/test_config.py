"""Configuration: built-in defaults < the TOML file < command-line flags."""

from __future__ import annotations

import re
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import gateway.config as config_module
from gateway.config import ConfigError, GatewayConfig, ModelConfig, load


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sluice.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def no_demo() -> str:
    raise AssertionError("the demo model must not be built when a model is configured")


class DemoCalls:
    """A demo-path callable that records how often it was called."""

    def __init__(self, path: str = "/cache/sluice/demo-mlp-v1.onnx") -> None:
        self.path = path
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.path


# ---------------------------------------------------------------------------
# Defaults and the demo model


def test_defaults_serve_the_demo_model() -> None:
    demo = DemoCalls()
    config = load(None, None, demo)
    assert isinstance(config, GatewayConfig)
    assert demo.calls == 1
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.max_body_bytes == 8 << 20
    assert config.request_timeout_s == 30.0
    assert list(config.models) == ["demo"]
    model = config.models["demo"]
    assert model.name == "demo"
    assert model.path == demo.path
    assert model.upstream == ()
    assert (model.policy, model.batch_size, model.timeout_ms) == ("fixed", 32, 5.0)
    assert model.workers >= 1


def test_empty_file_and_empty_flags_serve_the_demo_model(tmp_path: Path) -> None:
    demo = DemoCalls()
    config = load(write_toml(tmp_path, ""), {}, demo)
    assert demo.calls == 1
    assert list(config.models) == ["demo"]
    assert config.models["demo"].path == demo.path


def test_file_with_only_defaults_still_serves_the_demo_model(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [server]
        port = 9000
        [batching]
        batch_size = 4
        """,
    )
    config = load(path, None, DemoCalls())
    assert config.port == 9000
    assert list(config.models) == ["demo"]
    assert config.models["demo"].batch_size == 4


def test_demo_not_called_when_the_file_configures_a_model(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [models.resnet]
        path = "/models/resnet.onnx"
        """,
    )
    config = load(path, None, no_demo)
    assert list(config.models) == ["resnet"]
    assert config.models["resnet"].path == "/models/resnet.onnx"


def test_demo_not_called_when_a_flag_configures_a_model() -> None:
    config = load(None, {"models": {"bert": {"upstream": ["http://127.0.0.1:8001"]}}}, no_demo)
    assert list(config.models) == ["bert"]
    assert config.models["bert"].upstream == ("http://127.0.0.1:8001",)
    assert config.models["bert"].path is None


def test_no_models_and_no_demo_gives_no_models() -> None:
    assert load(None, None, None).models == {}


# ---------------------------------------------------------------------------
# Precedence

PRECEDENCE_TOML = """
    [batching]
    batch_size = 8
    timeout_ms = 2.5
    policy = "none"

    [models.a]
    path = "/models/a.onnx"
    batch_size = 16

    [models.b]
    path = "/models/b.onnx"
"""


def test_model_values_win_over_batching_defaults(tmp_path: Path) -> None:
    config = load(write_toml(tmp_path, PRECEDENCE_TOML), None, no_demo)
    a, b = config.models["a"], config.models["b"]
    assert (a.batch_size, a.timeout_ms, a.policy) == (16, 2.5, "none")
    assert (b.batch_size, b.timeout_ms, b.policy) == (8, 2.5, "none")


def test_flags_win_over_the_file_for_every_model(tmp_path: Path) -> None:
    config = load(write_toml(tmp_path, PRECEDENCE_TOML), {"batch_size": 64, "timeout_ms": 0.0}, no_demo)
    a, b = config.models["a"], config.models["b"]
    assert (a.batch_size, a.timeout_ms, a.policy) == (64, 0.0, "none")
    assert (b.batch_size, b.timeout_ms, b.policy) == (64, 0.0, "none")


def test_built_in_model_defaults_apply_when_nothing_overrides_them(tmp_path: Path) -> None:
    config = load(write_toml(tmp_path, '[models.a]\npath = "/a.onnx"\n'), None, no_demo)
    assert config.models["a"] == ModelConfig(name="a", path="/a.onnx")


def test_server_precedence(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [server]
        host = "0.0.0.0"
        port = 9000
        max_body_bytes = 1024
        """,
    )
    config = load(path, {"port": 9100, "log_level": "debug"}, DemoCalls())
    assert config.host == "0.0.0.0"
    assert config.port == 9100
    assert config.max_body_bytes == 1024
    assert config.log_level == "debug"
    assert config.request_timeout_s == 30.0


def test_server_flags_do_not_leak_into_models_and_model_flags_do_not_leak_into_server() -> None:
    config = load(None, {"port": 0, "workers": 3, "threads": 1}, DemoCalls())
    assert config.port == 0
    model = config.models["demo"]
    assert (model.workers, model.threads, model.worker_threads) == (3, 1, 1)
    assert not hasattr(config, "workers")


# ---------------------------------------------------------------------------
# Upstreams and flag models


def test_upstream_as_a_string(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[models.r]\nupstream = "http://10.0.0.1:8001"\n')
    assert load(path, None, no_demo).models["r"].upstream == ("http://10.0.0.1:8001",)


def test_upstream_as_a_list(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[models.r]\nupstream = ["http://10.0.0.1:8001", "https://10.0.0.2"]\n')
    model = load(path, None, no_demo).models["r"]
    assert model.upstream == ("http://10.0.0.1:8001", "https://10.0.0.2")
    assert model.path is None


def test_flag_model_replaces_the_file_model_of_the_same_name(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [batching]
        timeout_ms = 7.0

        [models.a]
        path = "/models/a.onnx"
        batch_size = 4

        [models.b]
        path = "/models/b.onnx"
        """,
    )
    config = load(path, {"models": {"a": {"upstream": ["http://127.0.0.1:9001"]}}}, no_demo)
    assert sorted(config.models) == ["a", "b"]
    a = config.models["a"]
    assert a.path is None
    assert a.upstream == ("http://127.0.0.1:9001",)
    assert a.batch_size == 32  # the file's table for "a" is gone, not merged
    assert a.timeout_ms == 7.0  # [batching] defaults still apply
    assert config.models["b"].path == "/models/b.onnx"


def test_state_is_in_memory_unless_a_redis_url_is_given(tmp_path: Path) -> None:
    assert load(None, {}, DemoCalls()).state.url is None
    path = write_toml(tmp_path, '[state]\nurl = "redis://10.0.0.5:6379/0"\nsync_s = 0.25\n')
    config = load(path, {"state": {"replica": "gw-2"}}, DemoCalls())
    assert (config.state.url, config.state.sync_s, config.state.replica) == ("redis://10.0.0.5:6379/0", 0.25, "gw-2")
    flagged = load(path, {"state": {"url": "redis://127.0.0.1:6380/1"}}, DemoCalls())
    assert flagged.state.url == "redis://127.0.0.1:6380/1" and flagged.state.sync_s == 0.25  # the flag wins


# ---------------------------------------------------------------------------
# Errors

ERRORS = [
    pytest.param(
        '[models.a]\npath = "/a.onnx"\nupstream = "http://h:1"\n', None, "give one server pool", id="path-and-upstream"
    ),
    pytest.param("[models.a]\nbatch_size = 4\n", None, "give one server pool", id="neither-path-nor-upstream"),
    pytest.param('[models.a]\npath = ""\n', None, "give one server pool", id="empty-path"),
    pytest.param("[models.a]\nupstream = []\n", None, "give one server pool", id="empty-upstream-list"),
    pytest.param('[models.a]\npath = "/a.onnx"\npolicy = "eager"\n', None, "policy must be one of fixed, none, adaptive", id="unknown-policy"),
    pytest.param('[models.a]\npath = "/a.onnx"\npolicy = "adaptive"\n', None, "the adaptive policy needs slo_ms", id="adaptive-without-slo"),
    pytest.param('[models.a]\npath = "/a.onnx"\n', {"policy": "greedy"}, "not 'greedy'", id="unknown-policy-flag"),
    pytest.param('[models.a]\npath = "/a.onnx"\nbatchsize = 4\n', None, r"unknown setting\(s\) \['batchsize'\]", id="unknown-model-key"),
    pytest.param('[batching]\nsize = 4\n[models.a]\npath = "/a.onnx"\n', None, r"unknown setting\(s\) \['size'\]", id="unknown-batching-key"),
    pytest.param('[serverr]\nport = 1\n', None, r"unknown section\(s\) \['serverr'\]", id="unknown-section"),
    pytest.param('[server]\nprot = 1\n', None, r"unknown server setting\(s\) \['prot'\]", id="unknown-server-key"),
    pytest.param('[server]\nmodels = 1\n', None, r"unknown server setting\(s\) \['models'\]", id="models-in-server"),
    pytest.param('[models.a]\npath = "/a.onnx"\nbatch_size = 0\n', None, "batch_size and workers must be >= 1", id="batch-size-0"),
    pytest.param('[batching]\nbatch_size = -3\n[models.a]\npath = "/a.onnx"\n', None, ">= 1", id="batch-size-negative"),
    pytest.param('[models.a]\npath = "/a.onnx"\n', {"batch_size": 0}, ">= 1", id="batch-size-0-flag"),
    pytest.param('[models.a]\npath = "/a.onnx"\nworkers = 0\n', None, ">= 1", id="workers-0"),
    pytest.param('[models.a]\npath = "/a.onnx"\ntimeout_ms = -1\n', None, "timeout_ms >= 0", id="negative-timeout"),
    pytest.param('[models.a]\nupstream = "ftp://h:1"\n', None, "upstream 'ftp://h:1' is not an http\\(s\\) URL", id="ftp-url"),
    pytest.param(
        '[models.a]\nupstream = ["http://h:1", "127.0.0.1:8001"]\n', None, "'127.0.0.1:8001' is not an http", id="no-scheme"
    ),
    pytest.param("", {"models": {"a": {"upstream": ["grpc://h:1"]}}}, "is not an http", id="bad-url-flag"),
    pytest.param('[models.a]\nupstream = "http://h:1"\nregistered = true\n[models.a.faas]\nfunction = "f"\n', None, "give one server pool", id="upstream-and-registered"),
    pytest.param("[models.a]\nregistered = true\nlease_s = 0\n", None, "lease_s must be positive", id="lease-zero"),
    pytest.param("[models.a]\nregistered = 'yes'\n", None, "registered = 'yes' is not a valid bool", id="registered-type"),
    pytest.param("[models.a.faas]\nregion = 'us-east-1'\n", None, "needs a function name", id="faas-without-function"),
    pytest.param("[models.a.faas]\nfunction = 'f'\nmemroy_mb = 512\n", None, r"unknown \[faas\] setting\(s\) \['memroy_mb'\]", id="faas-typo"),
    pytest.param("[models.a.faas]\nfunction = 'f'\nconcurrency = 0\n", None, "concurrency >= 1", id="faas-concurrency-0"),
    pytest.param("[models.a.faas]\nfunction = 'f'\nmemory_mb = '1GB'\n", None, "memory_mb = '1GB' is not a valid int", id="faas-memory-type"),
    pytest.param("[models.a.faas]\nfunction = 'f'\nendpoint_url = 'localhost:9000'\n", None, "is not an http", id="faas-endpoint-scheme"),
    pytest.param("[models.a]\nfaas = 'f'\n", None, "faas must be a table", id="faas-not-a-table"),
    pytest.param("[state]\nurl = 'http://r:6379'\n", None, "must be redis://", id="state-url-scheme"),
    pytest.param("[state]\nleader_lease_s = 0.5\n", None, "at least twice sync_s", id="state-lease-short"),
    pytest.param("[state]\nurl = 6379\n", None, "url = 6379 is not a valid str", id="state-url-type"),
    pytest.param("[state]\nhost = 'r'\n", None, r"unknown \[state\] setting\(s\) \['host'\]", id="state-typo"),
    pytest.param("[models.a\npath = 1\n", None, "cannot read config", id="malformed-toml"),
    pytest.param('[models.a]\npath = "/a.onnx"\npath = "/b.onnx"\n', None, "cannot read config", id="duplicate-toml-key"),
]


@pytest.mark.parametrize(("text", "flags", "match"), ERRORS)
def test_config_errors(tmp_path: Path, text: str, flags: dict[str, Any] | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(write_toml(tmp_path, text), flags, DemoCalls())


def test_error_names_the_model(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[models.good]\npath = "/a.onnx"\n[models.bad]\nbatch_size = 2\n')
    with pytest.raises(ConfigError, match="model 'bad'"):
        load(path, None, no_demo)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"cannot read config {re.escape(str(missing))}"):
        load(str(missing), None, DemoCalls())


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(str(tmp_path), None, DemoCalls())


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(write_toml(tmp_path, '[models.a]\npath = "/a.onnx"\n'))
    path.chmod(0)
    try:
        try:
            path.open("rb").close()
        except PermissionError:
            pass
        else:  # root reads a mode-000 file: make the open fail the way it would for anyone else

            def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
                raise PermissionError(13, "Permission denied", str(file))

            monkeypatch.setattr(config_module, "open", refuse, raising=False)
        with pytest.raises(ConfigError, match="cannot read config .*Permission denied"):
            load(str(path), None, DemoCalls())
    finally:
        path.chmod(0o600)


def test_file_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[models.a]\npath = "/a.onnx"\n')
    with pytest.raises(ConfigError, match="cannot read config"):
        load(str(path), None, DemoCalls())


WRONG_TYPES = [
    pytest.param('[models.a]\npath = "/a.onnx"\nbatch_size = "8"\n', id="batch-size-string"),
    pytest.param('[models]\na = "/a.onnx"\n', id="model-not-a-table"),
    pytest.param("[models.a]\nupstream = 8001\n", id="upstream-a-number"),
]


@pytest.mark.parametrize("text", WRONG_TYPES)
def test_wrongly_typed_values_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(write_toml(tmp_path, text), None, DemoCalls())


def test_an_slo_makes_the_adaptive_policy_the_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[models.a]\npath = "/a.onnx"\nslo_ms = 50\n[models.b]\npath = "/b.onnx"\nslo_ms = 50\npolicy = "fixed"\n')
    config = load(path, None, DemoCalls())
    assert config.models["a"].policy == "adaptive"
    assert config.models["b"].policy == "fixed"  # an explicit policy wins
    assert config.models["a"].percentile == 99.0


def test_a_faas_table_configures_a_function_only_model(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [models.bert]
        slo_ms = 200
        [models.bert.faas]
        function = "bert-batch"
        endpoint_url = "http://127.0.0.1:9000"
        memory_mb = 2048
        concurrency = 4
        """,
    )
    model = load(path, {}, no_demo).models["bert"]
    assert model.path is None and model.upstream == ()
    assert model.faas is not None and model.faas.function == "bert-batch" and model.faas.memory_mb == 2048
    assert model.faas.concurrency == 4 and model.faas.region is None and model.policy == "adaptive"
    # 100 ms billed at 2 GB: 0.2 GB-s at the default price, plus one request.
    assert model.faas.batch_cost(100.0) == pytest.approx(0.2 * 0.0000166667 + 0.0000002)


def test_any_server_pool_with_a_function_is_a_hybrid(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [models.up]
        upstream = ["http://127.0.0.1:8001"]
        scheduler = "mark"
        [models.up.faas]
        function = "f"
        [models.reg]
        registered = true
        lease_s = 10
        [models.reg.faas]
        function = "g"
        [models.alone]
        registered = true
        """,
    )
    models = load(path, {}, no_demo).models
    assert models["up"].hybrid and models["up"].scheduler == "mark"
    assert models["reg"].hybrid and models["reg"].lease_s == 10.0
    assert models["alone"].registered and not models["alone"].hybrid


def test_the_admin_token_comes_from_the_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_ADMIN_TOKEN", raising=False)
    assert load(None, {}, lambda: "/demo.onnx").admin_token is None  # control endpoints closed by default
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", "from-env")
    assert load(None, {}, lambda: "/demo.onnx").admin_token == "from-env"
    path = write_toml(tmp_path, '[server]\nadmin_token = "from-file"\n')
    assert load(path, {}, lambda: "/demo.onnx").admin_token == "from-file"


def test_a_prior_trace_feeds_the_hybrid_planner_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    from gateway.served import make_scheduler

    trace = tmp_path / "yesterday.txt"
    trace.write_text("\n".join(f"{t / 10:.2f}" for t in range(1200)))  # 10 requests/s for 120 s
    hybrid = '[models.m]\npath = "/m.onnx"\n[models.m.faas]\nfunction = "f"\n'
    model = load(write_toml(tmp_path, hybrid.replace("[models.m.faas]", f'prior_trace = "{trace}"\n[models.m.faas]')), None, no_demo).models["m"]
    scheduler = make_scheduler(model, datetime.now(timezone.utc))
    assert scheduler.prior is not None and scheduler.prior.weight_s == 3600.0
    assert scheduler.prior.counts.tolist() == [10.0] * 120 and scheduler.prior.start_s == 0.0  # plain seconds: from the first
    stamped = tmp_path / "stamped.csv"  # yesterday 09:00-11:00, one request a second
    stamped.write_text("".join(f"{datetime(2026, 12, 6, 9, tzinfo=timezone.utc) + timedelta(seconds=t):%Y-%m-%d %H:%M:%S}\n" for t in range(7200)))
    model = load(write_toml(tmp_path, hybrid.replace("[models.m.faas]", f'prior_trace = "{stamped}"\n[models.m.faas]')), None, no_demo).models["m"]
    assert make_scheduler(model, datetime(2026, 12, 7, 10, 30, tzinfo=timezone.utc)).prior.start_s == 5400.0  # served from 10:30
    assert make_scheduler(model, datetime(2026, 12, 7, 12, tzinfo=timezone.utc)).prior is None  # outside its hours
    for extra, match in ((f'prior_trace = "{tmp_path / "none.txt"}"', "prior_trace: "),
                         (f'prior_trace = "{trace}"\nscheduler = "mark"', "prior_trace is for the hybrid scheduler"),
                         (f'prior_trace = "{trace}"\nprior_weight_s = -1', "prior_weight_s must be 0 or more")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            load(write_toml(tmp_path, hybrid.replace("[models.m.faas]", f"{extra}\n[models.m.faas]")), None, no_demo)


def test_a_traffic_log_is_the_hybrid_planners_prior_once_it_holds_a_day(tmp_path: Path, caplog) -> None:
    from gateway.served import make_scheduler
    from sim.counts import HEADER, row

    logs = tmp_path / "traffic"
    hybrid = f'[models.m]\npath = "/m.onnx"\ntraffic_log = "{logs}"\n[models.m.faas]\nfunction = "f"\n'
    model = load(write_toml(tmp_path, hybrid), None, no_demo).models["m"]
    start = datetime(2026, 12, 7, 10, 30, tzinfo=timezone.utc)
    with caplog.at_level("INFO", logger="sluice.gateway"):
        assert make_scheduler(model, start).prior is None  # nothing logged yet
    assert any(r.getMessage() == "no traffic log to plan from yet" for r in caplog.records)
    (logs / "m").mkdir(parents=True)
    rows = (row(datetime(2026, 12, 6, 9, tzinfo=timezone.utc) + timedelta(seconds=t), 2) + "\n" for t in range(7200))
    (logs / "m" / "2026-12-06.csv").write_text(HEADER + "\n" + "".join(rows))
    scheduler = make_scheduler(model, start)
    assert scheduler.prior is not None and scheduler.prior.start_s == 5400.0 and scheduler.prior.counts[5400] == 2.0  # yesterday, from 10:30
    given = tmp_path / "given.txt"
    given.write_text("\n".join(f"{t / 10:.2f}" for t in range(100)))
    model = load(write_toml(tmp_path, hybrid.replace("[models.m.faas]", f'prior_trace = "{given}"\n[models.m.faas]')), None, no_demo).models["m"]
    assert make_scheduler(model, start).prior.counts.tolist() == [10.0] * 10  # a prior_trace comes first
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        load(write_toml(tmp_path, hybrid.replace(str(logs), str(tmp_path / "file"))), None, no_demo)
