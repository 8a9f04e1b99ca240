"""Who is signed in, and the CSRF token every form carries.

The session is Starlette's signed cookie (itsdangerous): HttpOnly, SameSite=Lax, Secure when the
console is served over https. It holds the person (sub, role, tenant, name, how they signed in),
their API token and the CSRF token; nothing else is kept anywhere.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "placematch_console"


class CsrfRefused(Exception):
    """A form post without the session's CSRF token (403)."""


class SignInRequired(Exception):
    """A page that needs a signed-in person (redirect to the sign-in page)."""


class WrongRole(Exception):
    def __init__(self, needs: tuple[str, ...]) -> None:
        super().__init__(", ".join(needs))
        self.needs = needs


@dataclass(frozen=True)
class Person:
    sub: str
    role: str
    tenant: str
    name: str
    via: str
    """"oidc" or "development"."""
    token: str


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_matches(session: dict[str, Any], submitted: object) -> bool:
    expected = session.get("csrf")
    return (isinstance(expected, str) and isinstance(submitted, str) and len(expected) >= 32
            and secrets.compare_digest(expected.encode(), submitted.encode()))


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matched the session's; else `CsrfRefused`."""
    form = await request.form()
    if not csrf_matches(request.session, form.get(CSRF_FIELD)):
        raise CsrfRefused()
    form_id = form.get("form_id")
    request.state.form_id = form_id if isinstance(form_id, str) and 0 < len(form_id) <= 64 else None
    return form


def sign_in(request: Request, *, sub: str, role: str, tenant: str, name: str, via: str, token: str) -> None:
    """Start a fresh session (a new CSRF token: nothing carried over from before sign-in)."""
    request.session.clear()
    request.session["person"] = {"sub": sub, "role": role, "tenant": tenant, "name": name, "via": via}
    request.session["token"] = token
    csrf_token(request)


def sign_out(request: Request) -> None:
    request.session.clear()


def current_person(request: Request) -> Person | None:
    person, token = request.session.get("person"), request.session.get("token")
    if not isinstance(person, dict) or not isinstance(token, str):
        return None
    try:
        return Person(sub=str(person["sub"]), role=str(person["role"]), tenant=str(person["tenant"]),
                      name=str(person.get("name") or person["sub"]), via=str(person.get("via", "oidc")), token=token)
    except KeyError:
        return None


def signed_in(request: Request, *roles: str) -> Person:
    person = current_person(request)
    if person is None:
        raise SignInRequired()
    if roles and person.role not in roles:
        raise WrongRole(roles)
    return person
