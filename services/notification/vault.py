"""Webhook signing secrets, kept encrypted outside the event log.

The subscription's events name its secrets by id only (`secret_id`, `previous_secret_id`); the
secrets themselves are Fernet tokens under `PLACEMATCH_SECRETS_KEY` in `subscription_secrets`, a
table of their own that is not the (immutable, hash-chained) event log: a row is deleted once its
secret stops signing — when the overlap after a rotation ends, at the next rotation, or when the
subscription is deleted — and then the secret is gone for good.

`PLACEMATCH_SECRETS_KEY` is one Fernet key (`openssl rand -base64 32`), or several separated by
commas: the first encrypts, every one decrypts, so the key itself can be rotated. Without it (the
embedded run) a key is generated once and kept in `<data_dir>/secrets.key` (0600); `placematch
serve` refuses to start without the setting. A key that does not open the stored secrets (lost or
changed) stops the service at start-up with a message saying so, rather than failing every delivery.

Subscriptions created before secrets left the events (data version 1) still carry their secrets in
clear in those old events; the upcasters in `subscriptions.py` keep them signing (`legacy_secrets`). They
are not copied here: a copy would not take them out of the log, and rewriting the log would break
its hash chain (`placematch verify`). Rotating such a subscription's secret retires the old one.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Database
from shared.events import Envelope
from shared.logs import get_logger
from shared.schema import events
from shared.store import EventStore
from shared.vocabulary import format_instant

from .domain import parse_instant
from .projections import subscription_secrets
from .subscriptions import SECRET_PREFIX, Subscription, SubscriptionStatus

log = get_logger("placematch.notification.vault")

KEY_FILE = "secrets.key"



class SecretsKeyError(RuntimeError):
    """The secrets key is missing, malformed, or does not open the stored secrets."""


class SecretMissing(RuntimeError):
    """A subscription names a secret that is not stored (deleted, or never committed)."""


def parse_keys(value: str, source: str = "PLACEMATCH_SECRETS_KEY") -> MultiFernet:
    """`PLACEMATCH_SECRETS_KEY`: Fernet keys separated by commas, the first one encrypting."""
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise SecretsKeyError(f"{source} is empty; set it to `openssl rand -base64 32`.")
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except (ValueError, TypeError):
        raise SecretsKeyError(f"{source} must be 32 random bytes in base64 (`openssl rand -base64 32`), "
                              "or several such keys separated by commas.") from None


def new_secret_id() -> str:
    return str(uuid.uuid4())


class SecretVault:
    """Seals, stores, opens and deletes the signing secrets of one notification service."""

    def __init__(self, secrets_key: str | None, data_dir: Path) -> None:
        self._configured = secrets_key
        self._data_dir = data_dir
        self._fernet: MultiFernet | None = None

    # -- start-up ---------------------------------------------------------------------------

    async def start(self, db: Database) -> None:
        """Settle the key and prove it opens a stored secret (called after the migrations)."""
        async with db.read() as conn:
            stored = (await conn.execute(select(func.count()).select_from(subscription_secrets))).scalar_one()
            sample = (await conn.execute(select(subscription_secrets.c.sealed).limit(1))).scalar()
        if self._configured:
            self._fernet = parse_keys(self._configured)
            source = "PLACEMATCH_SECRETS_KEY"
        else:
            self._fernet = self._key_file(stored)
            source = str(self._data_dir / KEY_FILE)
        if sample is not None:
            try:
                self._fernet.decrypt(sample.encode())
            except InvalidToken:
                raise SecretsKeyError(
                    f"The secrets key ({source}) does not open the {stored} webhook signing secret(s) stored in "
                    "subscription_secrets: it is not the key they were sealed with. Restore the key (several can be "
                    "given, separated by commas), or delete those rows and have every subscriber rotate its "
                    "secret.") from None

    def _key_file(self, stored: int) -> MultiFernet:
        path = self._data_dir / KEY_FILE
        if not path.exists():
            if stored:
                raise SecretsKeyError(
                    f"{path} is missing but {stored} webhook signing secret(s) are stored, sealed with it: "
                    "restore the file, or set PLACEMATCH_SECRETS_KEY to the key they were sealed with.")
            self._data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it meanwhile
                return parse_keys(path.read_text(), str(path))
            with os.fdopen(fd, "w") as out:
                out.write(Fernet.generate_key().decode() + "\n")
            log.info("generated the webhook secrets key", path=str(path))
        return parse_keys(path.read_text(), str(path))

    @property
    def fernet(self) -> MultiFernet:
        if self._fernet is None:
            raise SecretsKeyError("the secrets vault is used before the service started")
        return self._fernet

    # -- writing ----------------------------------------------------------------------------

    def seal(self, secret: str) -> str:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("a signing secret starts with whsec_")
        return self.fernet.encrypt(secret.encode()).decode()

    async def put(self, conn: AsyncConnection, subscription_id: str, secret_id: str, sealed: str, at: datetime) -> None:
        """Store a sealed secret, in the transaction that records the event naming it."""
        await conn.execute(subscription_secrets.insert().values(
            secret_id=secret_id, subscription_id=subscription_id, sealed=sealed, created_at=format_instant(at),
            retire_at=None))

    async def follow(self, conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
        """Keep the table in step with subscription events (same transaction): a rotation sets the
        previous secret's end and deletes any older one; a deletion deletes them all."""
        for envelope in envelopes:
            data, sid = envelope.data, envelope.subject
            if envelope.type == "subscription-secret-rotated":
                keep = [i for i in (data.get("secret_id"), data.get("previous_secret_id")) if i]
                await conn.execute(delete(subscription_secrets).where(
                    (subscription_secrets.c.subscription_id == sid) & subscription_secrets.c.secret_id.not_in(keep)))
                if data.get("previous_secret_id"):
                    await conn.execute(update(subscription_secrets).where(
                        subscription_secrets.c.secret_id == data["previous_secret_id"]).values(
                        retire_at=format_instant(parse_instant(data["previous_valid_until"]))))
            elif envelope.type == "subscription-deleted":
                await conn.execute(delete(subscription_secrets).where(subscription_secrets.c.subscription_id == sid))

    async def retire_expired(self, conn: AsyncConnection, now: datetime) -> int:
        """Delete the secrets whose rotation overlap has ended; return how many."""
        result = await conn.execute(delete(subscription_secrets).where(
            subscription_secrets.c.retire_at.is_not(None) & (subscription_secrets.c.retire_at <= format_instant(now))))
        return result.rowcount or 0

    # -- reading ----------------------------------------------------------------------------

    async def signing_secrets(self, conn: AsyncConnection, subscription: Subscription, at: datetime) -> list[str]:
        """The clear secrets that sign a message sent at `at`, current first. A previous secret
        retired meanwhile (its overlap ended as the attempt began) is left out."""
        ids = subscription.signing_secret_ids(at)
        opened = await self._open(conn, [i for i in ids if i not in subscription.legacy_secrets])
        found: list[str] = []
        for position, secret_id in enumerate(ids):
            secret = subscription.legacy_secrets.get(secret_id) or opened.get(secret_id)
            if secret is None and position == 0:
                raise SecretMissing(
                    f"subscription {subscription.id} signs with secret {secret_id}, which is not stored")
            if secret is not None:
                found.append(secret)
        return found

    async def _open(self, conn: AsyncConnection, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(ids)
        if not wanted:
            return {}
        rows = await conn.execute(select(subscription_secrets.c.secret_id, subscription_secrets.c.sealed)
                                  .where(subscription_secrets.c.secret_id.in_(wanted)))
        opened: dict[str, str] = {}
        for row in rows:
            try:
                opened[row.secret_id] = self.fernet.decrypt(row.sealed.encode()).decode()
            except InvalidToken:
                raise SecretsKeyError(f"the secrets key does not open signing secret {row.secret_id}: it was sealed "
                                      "with another key (set PLACEMATCH_SECRETS_KEY to include that key)") from None
        return opened


async def warn_of_secrets_in_clear(store: EventStore) -> int:
    """Log (and return) how many live subscriptions still sign with a secret that a version-1 event
    recorded in clear: rotating their secret is what retires it."""
    async with store.db.read() as conn:
        ids = (await conn.execute(select(events.c.stream_id).distinct().where(
            events.c.type.in_(["subscription-created", "subscription-secret-rotated"])
            & events.c.body.contains(f'"secret":"{SECRET_PREFIX}', autoescape=True)))).scalars().all()
        subscriptions = await store.load_many(Subscription, ids, conn)
    live = sorted(s.id for s in subscriptions.values()
                  if s.status is not SubscriptionStatus.DELETED and s.secret_id in s.legacy_secrets)
    if live:
        log.warning("subscriptions still sign with a secret recorded in clear in their events before secrets were "
                    "sealed; rotate their secrets (POST /subscriptions/{id}/rotate-secret)",
                    count=len(live), subscription_ids=live[:20])
    return len(live)


__all__ = ["SecretMissing", "SecretVault", "SecretsKeyError", "new_secret_id", "parse_keys", "subscription_secrets",
           "warn_of_secrets_in_clear"]
