"""Run notifications' pure rules (controlplane/domain/runs/notify.py): the signature a
receiver verifies, the addresses never called, the retry schedule, the create body."""

from __future__ import annotations

import pytest

from controlplane.domain.errors import ValidationFailed
from controlplane.domain.runs.model import parse_run_create
from controlplane.domain.runs.notify import (
    address_problem,
    retry_after_s,
    signature,
    url_problem,
    verify,
)

BODY = b'{"type":"run.succeeded"}'


def test_a_signature_signs_the_timestamp_and_the_body_and_verifies() -> None:
    header = signature("secret-123", 1700000000, BODY)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("secret-123", header, BODY, now=1700000010)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("another-secret", BODY, 1700000000),  # another secret
        ("secret-123", BODY + b" ", 1700000000),  # another body
        ("secret-123", BODY, 1700000000 + 301),  # too old: a replay
    ],
)
def test_a_bad_signature_is_detected(secret: str, body: bytes, now: int) -> None:
    assert not verify(secret, signature("secret-123", 1700000000, BODY), body, now=now)


def test_a_malformed_signature_header_does_not_verify() -> None:
    assert not verify("secret-123", "garbage", BODY, now=1700000000)
    assert not verify("secret-123", "t=x,v1=00", BODY, now=1700000000)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "::1",
     "fe80::1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1", "100.64.0.1"],
)  # fmt: skip
def test_addresses_that_are_not_global_are_refused(address: str) -> None:
    assert address_problem(address) is not None


def test_global_addresses_are_allowed() -> None:
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:4700::1111") is None


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "http:///x", "http://user:pw@example.com/", "http://127.0.0.1:80/",
     "http://[::1]/", "http://example.com:notaport/"],
)  # fmt: skip
def test_urls_that_cannot_be_targets(url: str) -> None:
    assert url_problem(url) is not None


def test_a_name_is_checked_when_called_not_when_given() -> None:
    assert url_problem("http://localhost:8080/hook") is None
    assert url_problem("https://hooks.example.com/x") is None


def test_retries_wait_1_s_doubling_to_300_s() -> None:
    assert [retry_after_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_after_s(20) == 300.0


def test_a_run_create_takes_notify_and_names_a_bad_url_by_pointer() -> None:
    created = parse_run_create(
        {"input": 1, "notify": {"url": "https://h.example/x", "secret": "12345678"}}
    )
    assert created.notify is not None and created.notify.secret == "12345678"
    assert "12345678" not in repr(created.notify), "the secret is kept out of logs"
    with pytest.raises(ValidationFailed) as refused:
        parse_run_create({"input": 1, "notify": {"url": "http://10.0.0.1/"}})
    assert refused.value.errors[0].pointer == "/notify/url"
