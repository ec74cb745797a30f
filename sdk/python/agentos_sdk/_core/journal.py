"""The step journal of one run: deterministic callIds and the steps earlier attempts recorded.

callIds (architecture/gateway-protocol.md): a step's ordinal among its siblings ("1", "2",
...), or the key the code gives; a nested step is "<parent>.<ordinal or key>". Keyed steps
take no ordinal, so adding one does not shift the callIds of the others.
"""

from __future__ import annotations

import re

from agentos_sdk._core.errors import NonDeterminismError, StepFailed
from agentos_sdk._core.protocol import JSON, JournalBody, RecordedStep, StepType

_KEY = re.compile(r"^(?![0-9]+$)[A-Za-z0-9_:@/-]{1,128}$")


class Journal:
    """Recorded steps by callId, the ordinal counters, and the last checkpoint."""

    def __init__(self, body: JournalBody | None) -> None:
        body = body or {"steps": [], "checkpoint": None}
        self._recorded: dict[str, RecordedStep] = {s["callId"]: s for s in body["steps"]}
        self._ordinals: dict[str | None, int] = {}
        checkpoint = body.get("checkpoint")
        self.state: JSON = checkpoint["state"] if checkpoint else None
        self.last_call_id: str | None = checkpoint["callId"] if checkpoint else None
        # The origin's step a replayed call differed from, until it is reported.
        self.divergence: RecordedStep | None = None

    def next_call_id(self, parent: str | None, key: str | None) -> str:
        """The callId of the next step under `parent` (None: top level).

        Raises ValueError for a key that is all digits (it would collide with an ordinal),
        holds a `.`, or is empty or longer than 128 characters.
        """
        if key is not None:
            if not _KEY.match(key):
                raise ValueError(
                    f"step key {key!r}: 1-128 of A-Z a-z 0-9 _ : @ / -, not only digits"
                )
            own = key
        else:
            self._ordinals[parent] = self._ordinals.get(parent, 0) + 1
            own = str(self._ordinals[parent])
        return own if parent is None else f"{parent}.{own}"

    def replay(
        self, call_id: str, name: str, step_type: StepType, step_input: JSON = None
    ) -> tuple[bool, JSON]:
        """`(True, output)` when `call_id` completed in an earlier attempt, else `(False, None)`.

        A step served from a replay's origin (`replayed`) must also have the same input;
        else the call diverged: it is set aside in `divergence` (the recorded step) with
        every other origin step, and `(False, None)` says to run it live.

        Raises StepFailed when it was recorded as failed, and NonDeterminismError when it
        was recorded with another name or type.
        """
        recorded = self._recorded.get(call_id)
        if recorded is None:
            return False, None
        if recorded.get("replayed") and (
            recorded["name"] != name
            or recorded["type"] != step_type
            or recorded["input"] != step_input
        ):
            self.divergence = recorded
            self._recorded = {k: v for k, v in self._recorded.items() if not v.get("replayed")}
            return False, None
        if recorded["name"] != name or recorded["type"] != step_type:
            raise NonDeterminismError(
                f"step {call_id}: an earlier attempt recorded {recorded['type']} step "
                f"{recorded['name']!r}, this attempt runs {step_type} step {name!r}; the "
                "handler must call its steps in the same order on every attempt (or give "
                "them keys)"
            )
        if recorded["status"] == "failed":
            error = recorded.get("error") or {"type": "Error", "message": ""}
            raise StepFailed(name, call_id, error["type"], error["message"])
        return True, recorded["output"]
