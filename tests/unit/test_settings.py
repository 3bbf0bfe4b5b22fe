"""Node settings: defaults, TOML/env/CLI precedence, one clear line per bad value, the example config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from wwwserve.node.policy import DEFAULT_POLICY_PATH, PolicyConfig
from wwwserve.node.settings import (
    DEFAULT_LOCAL_MODEL,
    DEFAULT_RPC_URL,
    ENV_PREFIX,
    NodeSettings,
    SettingsError,
    iter_setting_paths,
    load_settings,
    parse_override_pairs,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "node.toml.example"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own WWWSERVE_NODE__* variables must not leak into these tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def problems_of(excinfo: pytest.ExceptionInfo[SettingsError]) -> list[str]:
    return excinfo.value.problems


# ------------------------------------------------------------------------------------------------
# defaults


def test_defaults() -> None:
    s = load_settings(None, {})
    assert s.chain.rpc_url == DEFAULT_RPC_URL
    assert s.chain.contract_address is None
    assert s.server.max_body_bytes == 1024 * 1024
    assert s.server.request_timeout_s == 600.0
    assert s.server.api_keys == []
    assert s.server.endpoint_url == "http://127.0.0.1:8000"
    assert s.backend.kind == "local"
    assert s.backend.models == [DEFAULT_LOCAL_MODEL]
    assert s.policy.policy_class == DEFAULT_POLICY_PATH
    assert s.policy.to_config() == PolicyConfig()
    assert type(s.policy.to_config()) is PolicyConfig
    assert s.peers.ban_initial_s <= s.peers.ban_max_s
    assert s.identity.key_file(Path("/h")) == Path("/h/identities/node.ed25519")


def test_settings_are_frozen() -> None:
    s = load_settings(None, {})
    with pytest.raises(ValidationError):
        s.server.port = 9


def test_default_model_name_follows_kind() -> None:
    assert load_settings(None, {"backend.kind": "fake"}).backend.models == ["fake"]
    vllm = load_settings(None, {"backend.kind": "vllm", "backend.vllm.model": "/m/smollm2-hf"})
    assert vllm.backend.models == ["/m/smollm2-hf"]
    named = load_settings(None, {"backend.kind": "vllm", "backend.vllm.model": "/m", "backend.models": ["smollm2"]})
    assert named.backend.models == ["smollm2"]


def test_endpoint_url_public_and_ipv6() -> None:
    assert load_settings(None, {"server.public_url": "https://n1.example.org/"}).server.endpoint_url == (
        "https://n1.example.org"
    )
    assert load_settings(None, {"server.host": "::1", "server.port": 9000}).server.endpoint_url == "http://[::1]:9000"


# ------------------------------------------------------------------------------------------------
# sources and precedence


def test_toml_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[chain]
rpc_url = "https://rpc.example.org"
contract_address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
[server]
port = 9001
api_keys = ["k1", "k2"]
[backend]
kind = "openai"
models = ["qwen3-8b"]
[backend.openai]
base_url = "http://127.0.0.1:8100/v1"
api_key = "sk-secret"
[policy]
target_token_usage = 0.5
auto_stake = false
fixed_stake_wei = 1000000000000000000000
[policy.model_target_token_usage]
"qwen3-8b" = 0.7
""",
    )
    s = load_settings(path, {})
    assert s.chain.rpc_url == "https://rpc.example.org"
    assert s.server.port == 9001
    assert [k.get_secret_value() for k in s.server.api_keys] == ["k1", "k2"]
    assert s.backend.openai.base_url == "http://127.0.0.1:8100/v1"
    assert s.backend.openai.api_key is not None and s.backend.openai.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert s.policy.to_config().target_for("qwen3-8b") == 0.7
    # Money stays an exact int, well beyond float precision.
    assert s.policy.fixed_stake_wei == 10**21
    assert isinstance(s.policy.fixed_stake_wei, int)
    # Untouched sections keep their defaults.
    assert s.peers.probe_timeout_s == 2.0


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[server]\nport = 9001\nhost = '127.0.0.2'\n")
    monkeypatch.setenv("WWWSERVE_NODE__SERVER__PORT", "9002")
    monkeypatch.setenv("WWWSERVE_NODE__SERVER__API_KEYS", '["from-env"]')
    monkeypatch.setenv("wwwserve_node__policy__p_inspect", "0.5")  # names are case-insensitive
    s = load_settings(path, {})
    assert s.server.port == 9002
    assert s.server.host == "127.0.0.2"  # the file still supplies what env does not
    assert [k.get_secret_value() for k in s.server.api_keys] == ["from-env"]
    assert s.policy.p_inspect == 0.5


def test_env_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_NODE__BACKEND__KIND", "fake")
    monkeypatch.setenv("WWWSERVE_NODE__BACKEND__FAKE__LATENCY_S", "0.25")
    s = load_settings(None, {})
    assert s.backend.kind == "fake"
    assert s.backend.fake.latency_s == 0.25
    assert NodeSettings().backend.fake.latency_s == 0.25


def test_cli_overrides_beat_env_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[server]\nport = 9001\nmax_concurrent_requests = 7\n[peers]\nban_max_s = 100\n")
    monkeypatch.setenv("WWWSERVE_NODE__SERVER__PORT", "9002")
    monkeypatch.setenv("WWWSERVE_NODE__PEERS__PROBE_TIMEOUT_S", "3")
    s = load_settings(path, {"server.port": 9003, "peers": {"ban_initial_s": 1.5}})
    assert s.server.port == 9003  # CLI > env > file
    assert s.server.max_concurrent_requests == 7  # file
    assert s.peers.probe_timeout_s == 3.0  # env
    assert (s.peers.ban_initial_s, s.peers.ban_max_s) == (1.5, 100.0)  # nested override merges with file


def test_parse_override_pairs() -> None:
    pairs = parse_override_pairs(
        ["server.port=8001", "server.host=0.0.0.0", "server.public_url=http://n1:8001", 'server.api_keys=["a"]',
         "policy.auto_stake=false", "backend.models = ['m1', 'm2']"]
    )
    assert pairs == {
        "server.port": 8001,
        "server.host": "0.0.0.0",
        "server.public_url": "http://n1:8001",
        "server.api_keys": ["a"],
        "policy.auto_stake": False,
        "backend.models": ["m1", "m2"],
    }
    s = load_settings(None, pairs)
    assert s.server.endpoint_url == "http://n1:8001"
    assert s.backend.models == ["m1", "m2"]
    with pytest.raises(SettingsError, match=r"section\.field=value"):
        parse_override_pairs(["server.port"])


def test_override_addresses_stay_strings() -> None:
    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    pairs = parse_override_pairs([f"chain.contract_address={address}", "peers.fee_wei=1000"])
    assert pairs == {"chain.contract_address": address, "peers.fee_wei": 1000}
    assert load_settings(None, pairs).chain.contract_address == address


# ------------------------------------------------------------------------------------------------
# one clear line per bad value


def test_bad_url() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"chain.rpc_url": "localhost:8545"})
    assert problems_of(exc) == [
        "chain.rpc_url: must be an http:// or https:// URL with a host, like http://127.0.0.1:8545 "
        "(got 'localhost:8545')"
    ]


def test_negative_timeout() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"server.request_timeout_s": -1})
    assert problems_of(exc) == ["server.request_timeout_s: Input should be greater than 0 (got -1)"]


def test_unknown_kind() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"backend.kind": "ollama"})
    (line,) = problems_of(exc)
    assert line.startswith("backend.kind: ")
    assert "'local', 'openai', 'vllm' or 'fake'" in line
    assert line.endswith("(got 'ollama')")


def test_openai_requires_base_url_and_models() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"backend.kind": "openai"})
    assert problems_of(exc) == [
        "backend.openai.base_url: required when backend.kind is 'openai' (got nothing)",
        "backend.models: required when backend.kind is 'openai' (the names the backend serves) (got [])",
    ]
    ok = load_settings(None, {"backend.kind": "openai", "backend.openai.base_url": "http://b:1/v1",
                              "backend.models": ["m"]})
    assert ok.backend.models == ["m"]


def test_vllm_requires_model_and_own_port() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"backend.kind": "vllm"})
    assert problems_of(exc) == ["backend.vllm.model: required when backend.kind is 'vllm' (got nothing)"]
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"backend.kind": "vllm", "backend.vllm.model": "m", "backend.vllm.port": 8000})
    assert problems_of(exc) == ["backend.vllm.port: clashes with server.port on 127.0.0.1 (got 8000)"]


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nprot = 8001\n[sevrer]\nport = 1\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(path, {})
    assert problems_of(exc) == [
        "server.prot: unknown setting; did you mean 'port'? (got 8001)",
        "sevrer: unknown setting; did you mean 'server'? (got {'port': 1})",
    ]
    assert str(path) in str(exc.value)


def test_unknown_nested_env_and_override_keys_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_NODE__PEERS__PROBE_TIMEOUT", "1")
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"backend.fake.latency": 1})
    assert problems_of(exc) == [
        "backend.fake.latency: unknown setting; did you mean 'latency_s'? (got 1)",
        "peers.probe_timeout: unknown setting; did you mean 'probe_timeout_s'? (got '1')",
    ]


def test_bad_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = "eighty"\napi_keys = "k1"\n')
    with pytest.raises(SettingsError) as exc:
        load_settings(path, {})
    assert problems_of(exc) == [
        "server.port: Input should be a valid integer, unable to parse string as an integer (got 'eighty')",
        "server.api_keys: Input should be a valid list (got ***)",
    ]


def test_policy_knob_out_of_range_has_its_path() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"policy.offload_frequency": 1.5, "policy.k_exec": 0,
                             "policy.model_target_token_usage": {"m": 2.0}})
    assert problems_of(exc) == [
        "policy.model_target_token_usage: target_token_usage for 'm' must be in [-1, 1], got 2.0 (got {'m': 2.0})",
        "policy.offload_frequency: Input should be less than or equal to 1 (got 1.5)",
        "policy.k_exec: Input should be greater than or equal to 1 (got 0)",
    ]


def test_policy_cross_field_and_class_path() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"policy.auto_stake": True, "policy.fixed_stake_wei": 5})
    (line,) = problems_of(exc)
    assert line.startswith("policy: choose one stake mode")
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"policy.policy_class": "node/policy.py"})
    assert problems_of(exc) == ["policy.policy_class: must look like 'package.module:ClassName' (got 'node/policy.py')"]


def test_every_bad_value_listed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[chain]\npoll_interval_s = 0\n[peers]\nban_initial_s = 10\nban_max_s = 5\n")
    monkeypatch.setenv("WWWSERVE_NODE__SERVER__PORT", "70000")
    with pytest.raises(SettingsError) as exc:
        load_settings(path, {"identity.wallet": "../evil", "chain.contract_address": "0x123",
                             "server.cors_origins": ["https://ok.example", "https://x/path"]})
    lines = problems_of(exc)
    assert [line.split(":")[0] for line in lines] == [
        "identity.wallet", "chain.contract_address", "chain.poll_interval_s", "server.port",
        "server.cors_origins.1", "peers.ban_max_s",
    ]
    message = str(exc.value)
    assert message.startswith(f"invalid node settings ({path}), 6 problems:")
    assert all(line in message for line in lines)
    assert "peers.ban_max_s: must be >= ban_initial_s (10.0) (got 5.0)" in lines


def test_secrets_never_echoed() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"server.api_keys": ["sk-live-1", "sk-live-1"]})
    assert problems_of(exc) == ["server.api_keys: entries must be unique (got ***)"]
    assert "sk-live" not in str(exc.value)


def test_wildcard_host_needs_public_url() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"server.host": "0.0.0.0"})
    assert problems_of(exc) == [
        "server.public_url: required when host is the wildcard '0.0.0.0': peers cannot dial it (got nothing)"
    ]
    s = load_settings(None, {"server.host": "0.0.0.0", "server.public_url": "http://10.0.0.5:8000"})
    assert s.server.endpoint_url == "http://10.0.0.5:8000"


def test_bad_index_db_url() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"chain.index_db_url": "not a url"})
    (line,) = problems_of(exc)
    assert line.startswith("chain.index_db_url: must be an SQLAlchemy database URL")
    assert load_settings(None, {"chain.index_db_url": "sqlite:////tmp/i.db"}).chain.index_db_url == "sqlite:////tmp/i.db"


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as exc:
        load_settings(missing, {})
    assert problems_of(exc) == [f"config file {missing}: not found (pass an existing TOML file)"]


def test_unparsable_toml_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(path, {})
    (line,) = problems_of(exc)
    assert line.startswith(f"config file {path}: not valid TOML")


def test_bad_json_in_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_NODE__SERVER__API_KEYS", "k1,k2")
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {})
    (line,) = problems_of(exc)
    assert line.startswith("environment WWWSERVE_NODE__SERVER__API_KEYS: lists and tables must be JSON")


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# ------------------------------------------------------------------------------------------------
# the example config


def test_example_loads_and_matches_defaults() -> None:
    s = load_settings(EXAMPLE, {})
    # The example shows the defaults, so loading it changes nothing.
    assert s == load_settings(None, {})


def test_example_documents_every_field() -> None:
    """Every setting appears in its table, set or commented out, right below a comment describing it."""
    lines = EXAMPLE.read_text().splitlines()
    seen: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(lines):
        line = raw.strip()
        header = re.fullmatch(r"\[([\w.]+)\]", line)
        if header:
            table = header.group(1)
            continue
        key = re.fullmatch(r"#?\s*([A-Za-z_]\w*)\s*=.*", line)
        if key and table:
            seen.setdefault(f"{table}.{key.group(1)}", number)
    # Tables of free-form entries (per-model overrides) are documented by their header.
    tables = {m.group(1) for m in (re.fullmatch(r"\[([\w.]+)\]", raw.strip()) for raw in lines) if m}
    for path in iter_setting_paths():
        if path in tables:
            continue
        assert path in seen, f"{path} is not in {EXAMPLE.name}"
        above = lines[seen[path] - 1].strip()
        described = above.startswith("#") and not re.fullmatch(r"#\s*[A-Za-z_]\w*\s*=.*", above)
        assert described, f"{path} has no comment above it"
    # And the file sets nothing the model does not have (loading would fail, but say which).
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) == {"identity", "chain", "server", "backend", "policy", "peers", "judge"}
