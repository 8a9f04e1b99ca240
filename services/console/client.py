"""The console's only way to the data: the services' public HTTP APIs, with the person's token."""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from services.console.settings import ConsoleSettings


@dataclass
class ApiProblem(Exception):
    """A problem+json answer (or an unreachable service), to show next to the field it names."""

    status: int
    title: str
    detail: str
    field: str | None = None
    rule: str | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"

    @classmethod
    def of(cls, response: httpx.Response) -> ApiProblem:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(status=response.status_code, title=str(body.get("title") or response.reason_phrase),
                   detail=str(body.get("detail") or response.text[:300]), field=body.get("field"),
                   rule=body.get("rule"), errors=list(body.get("errors") or []))

    def field_errors(self) -> dict[str, str]:
        """Field name (dotted, as the API names it) -> message, the first per field."""
        found: dict[str, str] = {}
        for error in self.errors:
            name = error.get("field")
            if name and name not in found:
                found[str(name)] = str(error.get("message") or self.detail)
        if self.field and self.field not in found:
            found[self.field] = self.detail
        return found


class Api:
    """One person's calls: `await api.get("referral", "/referrals")`."""

    def __init__(self, settings: ConsoleSettings, http: httpx.AsyncClient, token: str | None,
                 form_id: str | None = None) -> None:
        self.settings = settings
        self.http = http
        self.token = token
        self.form_id = form_id

    def idempotency_key(self, method: str, url: str, body: Any) -> str:
        """The same rendered form sent twice with the same content is one request (a double click, a
        browser retry); a new form, or the form changed, is a new one."""
        if not self.form_id:
            return str(uuid.uuid4())
        content = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.form_id}|{method}|{url}|{content}"))

    def _headers(self, method: str, url: str, body: Any) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if method != "GET":
            headers["Idempotency-Key"] = self.idempotency_key(method, url, body)
        return headers

    async def request(self, method: str, service: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        url = self.settings.service_url(service) + path
        try:
            response = await self.http.request(method, url, json=json, params=params,
                                               headers=self._headers(method, url, json))
        except httpx.TransportError as error:
            raise ApiProblem(503, "Service unavailable",
                             f"the {service} service could not be reached ({type(error).__name__}); "
                             "try again in a moment") from None
        if response.status_code >= 400:
            raise ApiProblem.of(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def get(self, service: str, path: str, **params: Any) -> Any:
        return await self.request("GET", service, path, params={k: v for k, v in params.items() if v is not None})

    async def post(self, service: str, path: str, body: Any = None) -> Any:
        return await self.request("POST", service, path, json=body)

    async def put(self, service: str, path: str, body: Any = None) -> Any:
        return await self.request("PUT", service, path, json=body)
