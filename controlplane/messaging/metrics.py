"""Prometheus metrics of the outbox, the relay and the consumers (architecture/slos.md).

Names follow Prometheus conventions: `agentos_` prefix, base units, `_total` counters.
No label carries an unbounded value (no event or agent ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_EVENTS = Gauge(
    "agentos_outbox_events", "Outbox rows by state (the backlog is state=OutboxWritten).", ["state"]
)
OUTBOX_OLDEST_UNPUBLISHED_AGE = Gauge(
    "agentos_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest event not yet published (0 when none).",
)
PUBLISH_DURATION = Histogram(
    "agentos_outbox_publish_duration_seconds",
    "Time from sending an event to JetStream to its ack.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMIT_TO_PUBLISH = Histogram(
    "agentos_outbox_delivery_lag_seconds",
    "Time from an event's occurrence (its commit) to its publish ack.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUBLISH_ATTEMPTS = Counter("agentos_outbox_publish_attempts_total", "Publish attempts.")
PUBLISHED = Counter("agentos_outbox_published_total", "Events published (acked by JetStream).")
PUBLISH_FAILURES = Counter(
    "agentos_outbox_publish_failures_total", "Failed publish attempts.", ["reason"]
)
PUBLISH_DUPLICATES = Counter(
    "agentos_outbox_publish_duplicates_total",
    "Publishes JetStream reported as duplicates of an earlier Nats-Msg-Id (re-sends).",
)
DEAD_LETTERS = Counter(
    "agentos_outbox_dead_letters_total", "Events moved to the dead-letter set.", ["source"]
)
for _source in ("relay", "consumer"):
    DEAD_LETTERS.labels(_source)  # from 0, so rate() sees the first dead letter (SLO)
CONSUMER_ACK_LATENCY = Histogram(
    "agentos_consumer_ack_latency_seconds",
    "Time from an event's occurrence to its acknowledgement by a consumer.",
    ["consumer"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
CONSUMER_ERRORS = Counter(
    "agentos_consumer_handler_errors_total", "Consumer handler failures (nak).", ["consumer"]
)
