"""The SDK's journal on a recorded replay (architecture/gateway-protocol.md, "Replay"): a
served step is returned only when called as recorded; otherwise it is a divergence and the
rest of the origin is forgotten."""

from __future__ import annotations

from agentos_sdk._core.journal import Journal
from agentos_sdk._core.protocol import JournalBody, RecordedStep


def _step(call_id: str, step: int, *, replayed: bool = True) -> RecordedStep:
    return {
        "callId": call_id, "type": "tool", "name": "effect", "status": "succeeded",
        "input": {"step": step}, "output": step, "error": None, "replayed": replayed,
    }  # fmt: skip


def test_a_served_step_called_as_recorded_returns_its_output() -> None:
    journal = Journal({"steps": [_step("1", 1)], "checkpoint": None})
    assert journal.replay("1", "effect", "tool", {"step": 1}) == (True, 1)
    assert journal.divergence is None


def test_a_served_step_called_otherwise_is_a_divergence_and_the_origin_is_dropped() -> None:
    body: JournalBody = {"steps": [_step("1", 1), _step("2", 2)], "checkpoint": None}
    journal = Journal(body)
    assert journal.replay("1", "effect", "tool", {"step": 10}) == (False, None)
    assert journal.divergence is not None and journal.divergence["input"] == {"step": 1}
    assert journal.replay("2", "effect", "tool", {"step": 2}) == (False, None), "live now"


def test_a_redelivered_step_of_the_run_itself_is_not_compared_by_input() -> None:
    journal = Journal({"steps": [_step("1", 1, replayed=False)], "checkpoint": None})
    assert journal.replay("1", "effect", "tool", {"step": 99}) == (True, 1)
