"""Agent() reads its settings from the sandbox's environment and names what is wrong."""

from __future__ import annotations

import pytest
from agentos_sdk import Agent, ConfigError

ENV = {"AGENTOS_GATEWAY_URL": "http://10.88.0.1:8090", "AGENTOS_AGENT_TOKEN": "t0ken"}


def test_the_settings_come_from_the_environment_with_defaults() -> None:
    settings = Agent(environ=ENV).settings
    assert settings.gateway_url == "http://10.88.0.1:8090"
    assert (settings.concurrency, settings.heartbeat_s) == (1, 5.0)
    assert "t0ken" not in repr(settings)


def test_concurrency_and_heartbeat_are_read_from_their_variables() -> None:
    env = {**ENV, "AGENTOS_RUN_CONCURRENCY": "4", "AGENTOS_HEARTBEAT_SECONDS": "2.5"}
    settings = Agent(environ=env).settings
    assert (settings.concurrency, settings.heartbeat_s) == (4, 2.5)


@pytest.mark.parametrize("missing", ["AGENTOS_GATEWAY_URL", "AGENTOS_AGENT_TOKEN"])
def test_a_missing_variable_is_a_clear_error_naming_it(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is not set"):
        Agent(environ=env)


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTOS_GATEWAY_URL", raising=False)
    with pytest.raises(ConfigError, match="AGENTOS_GATEWAY_URL"):
        Agent()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENTOS_RUN_CONCURRENCY", "0"),
        ("AGENTOS_RUN_CONCURRENCY", "two"),
        ("AGENTOS_HEARTBEAT_SECONDS", "-1"),
        ("AGENTOS_GATEWAY_URL", "10.88.0.1:8090"),
    ],
)
def test_a_malformed_variable_is_a_clear_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable} must be"):
        Agent(environ={**ENV, variable: value})


def test_keyword_overrides_are_checked_like_their_variables() -> None:
    with pytest.raises(ConfigError, match=r"^AGENTOS_RUN_CONCURRENCY must be"):
        Agent(environ=ENV, concurrency=0)
    with pytest.raises(ConfigError, match=r"^AGENTOS_HEARTBEAT_SECONDS must be"):
        Agent(environ=ENV, heartbeat_seconds=0)
