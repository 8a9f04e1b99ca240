"""Templates: Jinja2 with the GOV.UK Frontend classes, and what every page is given."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.console import security
from services.console.charts import pounds

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["pounds"] = pounds
templates.env.globals["new_form_id"] = lambda: str(uuid.uuid4())
"""Each rendered form's own id: sending the same form twice (a double click, a retry) is one request."""
templates.env.filters["label"] = lambda code: str(code).replace("_", " ").capitalize()

NAVIGATION = {
    "commissioner": [("/applications", "Applications"), ("/providers", "Providers"), ("/policy", "Ranking policy"),
                     ("/shortlists", "Shortlists"), ("/intelligence", "Market intelligence"),
                     ("/statement", "Position statement"), ("/spend", "Spend")],
    "borough": [("/referrals", "My referrals"), ("/referrals/new", "Raise a referral"),
                ("/placements", "My placements"), ("/intelligence", "Market intelligence")],
    "provider": [("/invitations", "Invitations"), ("/offers", "My offers"), ("/placements", "My placements"),
                 ("/intelligence", "Market")],
    "auditor": [("/audit", "Evidence packs"), ("/intelligence", "Market intelligence")],
}


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    person = security.current_person(request)
    nav = NAVIGATION.get(person.role, []) if person else []
    return templates.TemplateResponse(request, template, {
        "person": person, "nav": nav, "csrf": security.csrf_token(request), "csrf_field": security.CSRF_FIELD,
        "path": request.url.path, "dev_enabled": request.app.state.settings.console_dev_sign_in, **context},
        status_code=status_code)
