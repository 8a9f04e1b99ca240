"""The child's details sealed at rest: in `referral_views` and in stored Idempotency-Key answers.

Before this revision the view held `child_ref` and the birth date in clear, and so did the stored
answers of keyed requests; erasure scrubbed them (not reliably). Now both hold them only sealed
under the referral's key, so destroying the key is the whole erasure. This seals what an older
database holds: each view's details under its referral's key (emptied if that key was erased),
each stored answer of a request that took effect on a referral under that referral's key (the
`answer_erased` problem if the key was erased).

Revision ID: referral_0004
Revises: referral_0003
Create Date: 2026-12-02
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet, InvalidToken

revision = "referral_0004"
down_revision = "referral_0003"
branch_labels = None
depends_on = None

FIELDS = ("child_ref", "birth_date")
ERASED_DETAIL = ("the first request with this Idempotency-Key took effect on {effect}; its answer is no longer "
                 "kept, as the personal data it was about have been erased; read that resource instead")


def _keys(bind: Any) -> dict[str, str | None]:
    return {r.referral_id: r.key for r in bind.execute(sa.text("SELECT referral_id, key FROM referral_personal_keys"))}


def _stored_answers(bind: Any, sealed: bool) -> list[Any]:
    return bind.execute(sa.text(
        "SELECT k.scope, k.key, k.body, k.sealed_under, e.effect, e.created FROM idempotency_keys k "
        "JOIN idempotency_effects e ON e.scope = k.scope AND e.key = k.key "
        "WHERE k.status IS NOT NULL AND k.body IS NOT NULL AND "
        + ("k.sealed_under IS NOT NULL" if sealed else "k.sealed_under IS NULL"))).all()


def _erased_answer(effect: str) -> dict[str, Any]:
    body = {"type": "about:blank", "title": "Answer erased", "status": 409, "rule": "answer_erased",
            "effect": effect, "detail": ERASED_DETAIL.format(effect=effect)}
    return {"status": 409, "headers": json.dumps([["content-type", "application/problem+json"]]),
            "body": json.dumps(body, separators=(",", ":")).encode(), "sealed_under": None}


def _update_answer(bind: Any, row: Any, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in values)
    bind.execute(sa.text(f"UPDATE idempotency_keys SET {sets} WHERE scope = :s AND key = :k"),
                 {**values, "s": row.scope, "k": row.key})


def _update_view(bind: Any, referral_id: str, data: dict[str, Any]) -> None:
    bind.execute(sa.text("UPDATE referral_views SET referral = :r WHERE referral_id = :id"),
                 {"r": json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False), "id": referral_id})


def upgrade() -> None:
    bind = op.get_bind()
    keys = _keys(bind)
    for row in bind.execute(sa.text("SELECT referral_id, referral FROM referral_views")).all():
        data, key = json.loads(row.referral), keys.get(row.referral_id)
        clear = [f for f in FIELDS if data.get(f) is not None and not isinstance(data[f], dict)]
        if not clear or (row.referral_id not in keys):
            continue
        for field in clear:
            data[field] = {"sealed": Fernet(key.encode()).encrypt(str(data[field]).encode()).decode()} if key else None
        _update_view(bind, row.referral_id, data)
    for row in _stored_answers(bind, sealed=False):
        if row.effect not in keys:
            continue
        key = keys[row.effect]
        _update_answer(bind, row, {"body": Fernet(key.encode()).encrypt(bytes(row.body)), "sealed_under": row.effect}
                       if key else _erased_answer(row.created or row.effect))


def downgrade() -> None:
    bind = op.get_bind()
    keys = _keys(bind)
    for row in bind.execute(sa.text("SELECT referral_id, referral FROM referral_views")).all():
        data, key = json.loads(row.referral), keys.get(row.referral_id)
        sealed = [f for f in FIELDS if isinstance(data.get(f), dict)]
        if not sealed:
            continue
        for field in sealed:
            try:
                data[field] = Fernet(key.encode()).decrypt(data[field]["sealed"].encode()).decode() if key else None
            except InvalidToken:
                data[field] = None
        _update_view(bind, row.referral_id, data)
    for row in _stored_answers(bind, sealed=True):
        key = keys.get(row.sealed_under)
        try:
            opened = Fernet(key.encode()).decrypt(bytes(row.body)) if key else None
        except InvalidToken:
            opened = None
        _update_answer(bind, row, {"body": opened, "sealed_under": None} if opened is not None
                       else _erased_answer(row.created or row.effect))
