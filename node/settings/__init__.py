"""The node's settings: one typed model, read once at start-up from TOML, environment and CLI overrides.

`wwwserve node run --config node.toml` calls `load_settings(path, overrides)`. Precedence, highest first:

1. CLI overrides, a dict of dotted keys (`{"server.port": 8001}`) or nested dicts; `parse_override_pairs`
   turns `--set server.port=8001` strings into that dict,
2. environment variables `WWWSERVE_NODE__<SECTION>__<FIELD>` (nested delimiter `__`; lists and tables as
   JSON, e.g. `WWWSERVE_NODE__SERVER__API_KEYS='["k1"]'`),
3. the TOML file,
4. the defaults below.

Every bad value, from whichever source, is reported at once in one `SettingsError` whose message has one
`section.field: problem (got X)` line per problem. Unknown keys are errors too, so a typo in the file, an
override or a nested environment variable cannot silently leave a default in force. Secrets (API keys)
are `SecretStr` and never echoed in messages.

`docs/node.toml.example` documents every field; a unit test keeps it loadable and complete.

The package, by job:

  checks    the value checks and field types the sections share (URLs, names, addresses, ports), `Section`
  sections  identity, chain, server, policy, peers, judge
  backend   the [backend] section and one sub-section per backend kind
  loading   `NodeSettings` (the whole, and where its values come from), `load_settings`,
            `parse_override_pairs`, `SettingsError` and its messages, `iter_setting_paths`
"""

from __future__ import annotations

from wwwserve.node.settings.backend import (
    DEFAULT_LOCAL_MODEL,
    BackendKind,
    BackendSettings,
    FakeBackendSettings,
    LocalBackendSettings,
    OpenAIBackendSettings,
    VllmBackendSettings,
)
from wwwserve.node.settings.loading import (
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    NodeSettings,
    SettingsError,
    iter_setting_paths,
    load_settings,
    parse_override_pairs,
)
from wwwserve.node.settings.sections import (
    DEFAULT_RPC_URL,
    ChainSettings,
    IdentitySettings,
    JudgeSettings,
    PeerSettings,
    PolicySettings,
    ServerSettings,
)

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_RPC_URL",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "BackendKind",
    "BackendSettings",
    "ChainSettings",
    "FakeBackendSettings",
    "IdentitySettings",
    "JudgeSettings",
    "LocalBackendSettings",
    "NodeSettings",
    "OpenAIBackendSettings",
    "PeerSettings",
    "PolicySettings",
    "ServerSettings",
    "SettingsError",
    "VllmBackendSettings",
    "iter_setting_paths",
    "load_settings",
    "parse_override_pairs",
]
