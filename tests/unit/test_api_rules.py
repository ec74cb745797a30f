"""Pure rules of the API: roles, label selectors, the rate limiter, the error catalogue,
continue tokens."""

from __future__ import annotations

import inspect

import grpc
import pytest

import controlplane.domain.errors as errors
from controlplane.api.errors import CATALOGUE
from controlplane.api.ratelimit import TokenBucketLimiter
from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import BadRequest, RateLimited
from controlplane.domain.selectors import matches, parse_selector
from controlplane.service.listing import decode_continue, encode_continue


def test_roles_include_the_ones_below_and_stop_at_the_tenant() -> None:
    editor = Principal("e", "team-a", Role.EDITOR)
    assert editor.has_role("team-a", Role.VIEWER) and editor.has_role("team-a", Role.EDITOR)
    assert not editor.has_role("team-a", Role.ADMIN)
    assert not editor.has_role("team-b", Role.VIEWER) and not editor.can_see_tenant("team-b")
    root = Principal("root", platform_admin=True)
    assert root.can_see_tenant("any") and root.has_role("any", Role.ADMIN)


def test_a_principal_is_either_platform_admin_or_one_tenant_role() -> None:
    with pytest.raises(ValueError):
        Principal("x", "t", Role.ADMIN, platform_admin=True)
    with pytest.raises(ValueError):
        Principal("x")
    with pytest.raises(ValueError):
        Principal("x", None, Role.ADMIN)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("tier notin (a,b)", {}, True),
        ("app.kubernetes.io/name", {"app.kubernetes.io/name": "x"}, True),
        ("!legacy", {"legacy": "1"}, False),
        ("app=web,!legacy", {"app": "web"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selectors_follow_kubernetes(selector: str, labels: dict, expected: bool) -> None:
    assert matches(parse_selector(selector), labels) is expected


@pytest.mark.parametrize("selector", ["a=b=c", "tier in ()", "in (", "=x", "a b"])
def test_a_malformed_selector_is_a_bad_request(selector: str) -> None:
    with pytest.raises(BadRequest):
        parse_selector(selector)


def test_the_bucket_allows_a_burst_then_the_rate_and_says_when_to_retry() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(2.0, 3, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("p")
    with pytest.raises(RateLimited) as refused:
        limiter.take("p")
    assert refused.value.retry_after_s == pytest.approx(0.5)
    limiter.take("q")  # another principal has its own bucket
    now[0] = 0.5
    limiter.take("p")
    with pytest.raises(RateLimited):
        limiter.take("p")


def test_every_error_code_is_in_the_catalogue_with_a_real_grpc_code() -> None:
    codes = {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AgentOSError)
    } | {IllegalTransition.code}
    assert codes <= set(CATALOGUE), codes - set(CATALOGUE)
    for code, spec in CATALOGUE.items():
        assert spec.grpc_code in grpc.StatusCode.__members__, code
        assert 400 <= spec.http_status < 600


def test_continue_tokens_round_trip_and_refuse_forgeries() -> None:
    assert decode_continue(encode_continue("agent-7")) == "agent-7"
    for forged in ("", None):
        assert decode_continue(forged) is None
    for forged in ("!!!", "eyJ4IjoxfQ", encode_continue("x")[:-2]):
        with pytest.raises(BadRequest):
            decode_continue(forged)


def test_a_spec_as_stored_reads_back_whatever_its_null_fields() -> None:
    from controlplane.domain.agents.model import AgentSpec

    spec = AgentSpec.model_validate(
        {"image": "x", "readiness": {"heartbeat": {}}, "resources": {"limits": {"cpu": "1"}}}
    )
    stored = spec.model_dump(mode="json", by_alias=True)  # as AgentRepository writes it
    assert stored["readiness"]["exec"] is None
    assert AgentSpec.model_validate(stored) == spec


def test_numbers_refuse_booleans_but_take_integral_floats() -> None:
    from controlplane.domain.agents.model import parse_agent
    from controlplane.domain.errors import ValidationFailed

    base = {"apiVersion": "agentos.io/v1alpha1", "kind": "Agent", "metadata": {"name": "n"}}
    assert parse_agent({**base, "spec": {"image": "x", "priority": 3.0}}).spec.priority == 3
    with pytest.raises(ValidationFailed) as refused:
        parse_agent({**base, "spec": {"image": "x", "priority": True}})
    assert [e.pointer for e in refused.value.errors] == ["/spec/priority"]
