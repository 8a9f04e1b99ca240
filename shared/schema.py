"""Tables every service has: events, outbox, processed events, idempotency keys, rate-limit counters,
the actors behind `actorid`.

Each service's first Alembic migration creates them with `shared.migrations.create_core_tables`.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

Position = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("stream_id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(100), nullable=False),
    Column("time", String(40), nullable=False),
    Column("body", Text, nullable=False, doc="The whole CloudEvent as canonical JSON."),
    Column("stream_hash", String(64), nullable=False, doc="sha256(previous stream_hash + body)"),
    Column("chain_hash", String(64), nullable=False, doc="sha256(previous chain_hash + body), global order"),
    UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
)
Index("ix_events_type", events.c.type)

outbox = Table(
    "outbox",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("topic", String(200), nullable=False),
    Column("key", String(100), nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("processed_at", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False, default=0,
           doc="Order in which this service took its inputs in; replay feeds them back in this order"),
)
Index("ix_processed_events_seq", processed_events.c.seq)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(300), primary_key=True, doc="limit, endpoint and client (shared.limits)"),
    Column("count", BigInteger, nullable=False, doc="hits in the window, refused ones included"),
    Column("expires_at", Float, nullable=False, doc="end of the fixed window, Unix seconds"),
)
Index("ix_rate_limits_expires_at", rate_limits.c.expires_at)

actors = Table(
    "actors",
    metadata,
    Column("sub", String(100), primary_key=True, doc="the token's `sub`: the `actorid` on the events they recorded"),
    Column("actor", String(200), nullable=False, doc="role:tenant they last acted as"),
    Column("name", String(200), nullable=True, doc="the token's `name`"),
    Column("username", String(200), nullable=True, doc="the token's `preferred_username`"),
    Column("first_seen", String(40), nullable=False),
    Column("last_seen", String(40), nullable=False),
    comment="Who an `actorid` is (core schema version 4): the audit record's names, never put in events.",
)

# The Idempotency-Key protocol's tables are core tables too; shared.idempotency declares them on this
# metadata (imported last: it needs `metadata`, and is imported by whoever imports this module).
import shared.idempotency  # noqa: E402,F401
