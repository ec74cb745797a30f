"""The event envelope's wire form: compact JSON, as JetStream carries it (adr/0003).

The writer encodes it once, in the transaction that writes the event, and stores it in
`outbox.encoded_envelope`; the relay publishes those bytes as they are, so the JSONB payload
is never decoded and re-encoded on the hot path (architecture/scaling.md, the relay).
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.domain.events.envelope import EventEnvelope, parse_rfc3339


def encode_envelope(envelope: EventEnvelope) -> bytes:
    """`envelope.to_dict()` as compact UTF-8 JSON (no spaces after separators)."""
    return json.dumps(envelope.to_dict(), separators=(",", ":")).encode()


def decode_envelope(data: bytes) -> EventEnvelope:
    """The envelope of `encode_envelope(e)`: equal to `e`.

    Raises:
        ValueError, KeyError, TypeError: `data` is not an encoded envelope.
    """
    raw: dict[str, Any] = json.loads(data)
    raw["occurred_at"] = parse_rfc3339(raw["occurred_at"])
    return EventEnvelope(**raw)
