"""Crypto-shredding of the child's identity: sealed per referral, erased by destroying the key.

`child_ref` and `birth_date` never reach the event log, the outbox or Kafka in clear: the
`SealingEventStore` replaces them with a Fernet token under a key of their own referral, kept in
`referral_personal_keys`. The read model (`referral_views`) holds the same sealed tokens and
opens them on read, and stored Idempotency-Key answers are sealed whole under that key
(`SealedAnswers`). Erasure destroys the key, and that is all it does. The events — and so the hash chain and every
replay — stay exactly as recorded; the sealed values simply can no longer be opened, and read as
None. Nothing downstream needs them: matching works from `age_at_start` and the district.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Column, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.errors import InvalidTransition
from shared.events import Envelope, format_time, now_utc
from shared.idempotency import AnswerPolicy
from shared.store import EventStore

from .details import PERSONAL_FIELDS

SEALED = "sealed"
SEALED_TYPES = ("referral-raised", "referral-amended")

keys_metadata = MetaData()
personal_keys = Table(
    "referral_personal_keys", keys_metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("key", String(64), nullable=True, doc="Fernet key; NULL once erased"),
    Column("erased_at", String(40), nullable=True),
)


def _objects(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The places personal fields live in an event's data (top level, `referral`, `changes`)."""
    found = [data]
    for name in ("referral", "changes"):
        if isinstance(data.get(name), dict):
            found.append(data[name])
    return found


async def _key(conn: AsyncConnection, referral_id: str) -> tuple[bool, str | None]:
    """(known, key): known=False when the referral has no key row yet."""
    row = (await conn.execute(select(personal_keys).where(personal_keys.c.referral_id == referral_id))).first()
    return (row is not None, row.key if row else None)


async def seal(conn: AsyncConnection, referral_id: str, data: dict[str, Any]) -> dict[str, Any]:
    if not any(o.get(f) is not None for o in _objects(data) for f in PERSONAL_FIELDS):
        return data
    known, key = await _key(conn, referral_id)
    if known and key is None:
        raise InvalidTransition("the child's details of this referral were erased; they cannot be recorded again",
                                field="child_ref", rule="erased")
    if not known:
        key = Fernet.generate_key().decode()
        await conn.execute(personal_keys.insert().values(referral_id=referral_id, key=key))
    assert key is not None
    fernet = Fernet(key.encode())
    sealed = {**data}
    for name in ("referral", "changes"):
        if isinstance(sealed.get(name), dict):
            sealed[name] = {**sealed[name]}
    for obj in _objects(sealed):
        for field in PERSONAL_FIELDS:
            if obj.get(field) is not None:
                obj[field] = {SEALED: fernet.encrypt(str(obj[field]).encode()).decode()}
    return sealed


def unseal_with(key: str | None, data: dict[str, Any]) -> dict[str, Any]:
    fernet = Fernet(key.encode()) if key else None
    opened = {**data}
    for name in ("referral", "changes"):
        if isinstance(opened.get(name), dict):
            opened[name] = {**opened[name]}
    for obj in _objects(opened):
        for field in PERSONAL_FIELDS:
            value = obj.get(field)
            if isinstance(value, dict) and SEALED in value:
                try:
                    obj[field] = fernet.decrypt(value[SEALED].encode()).decode() if fernet else None
                except InvalidToken:
                    obj[field] = None
    return opened


async def erase(conn: AsyncConnection, referral_id: str) -> None:
    """Destroy the key: every sealed value of this referral is unreadable from now on (a key
    erased before keeps its first `erased_at`)."""
    known, key = await _key(conn, referral_id)
    values = {"key": None, "erased_at": format_time(now_utc())}
    if not known:
        await conn.execute(personal_keys.insert().values(referral_id=referral_id, **values))
    elif key is not None:
        await conn.execute(update(personal_keys).where(personal_keys.c.referral_id == referral_id).values(**values))


def seal_bytes(key: str | None, plain: bytes) -> bytes | None:
    """`plain` sealed under `key`; None without a key (erased: nothing may be kept)."""
    return Fernet(key.encode()).encrypt(plain) if key else None


def open_bytes(key: str | None, sealed: bytes) -> bytes | None:
    if not key:
        return None
    try:
        return Fernet(key.encode()).decrypt(sealed)
    except InvalidToken:
        return None


class SealedAnswers(AnswerPolicy):
    """The stored answer of every keyed request that touched a referral is sealed under its key (the
    answers quote the child's details), so that destroying the key is the whole erasure."""

    async def seal(self, conn: AsyncConnection, stream_id: str, body: bytes) -> bytes | None:
        known, key = await _key(conn, stream_id)
        if not known:  # nothing personal was ever recorded for this stream
            return body
        return seal_bytes(key, body)

    async def open(self, conn: AsyncConnection, stream_id: str, sealed: bytes) -> bytes | None:
        _, key = await _key(conn, stream_id)
        return open_bytes(key, sealed)


class SealingEventStore(EventStore):
    """The referral service's store: seals personal fields on append, opens them on read."""

    async def append(self, conn: AsyncConnection, stream_id: str, expected_version: int | None,
                     new_events: Sequence[NewEvent], **kwargs: Any) -> list[Envelope]:
        sealed = [NewEvent(e.type, await seal(conn, stream_id, e.data)) for e in new_events]
        envelopes = await super().append(conn, stream_id, expected_version, sealed, **kwargs)
        return [replace(envelope, data=new.data) for envelope, new in zip(envelopes, new_events, strict=False)]

    async def read_stream(self, stream_id: str, conn: AsyncConnection | None = None) -> list[Envelope]:
        if conn is None:
            async with self.db.read() as c:
                return await self.read_stream(stream_id, c)
        envelopes = await super().read_stream(stream_id, conn)
        if not any(e.type in SEALED_TYPES for e in envelopes):
            return envelopes
        _, key = await _key(conn, stream_id)  # one key per referral: looked up once per read
        return [replace(e, data=unseal_with(key, e.data)) if e.type in SEALED_TYPES else e for e in envelopes]
