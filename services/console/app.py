"""The commissioning console: server-rendered pages over the services' public APIs.

It owns no database and no event store: what it shows comes from the services, called with the
signed-in person's token; what it keeps is the session cookie. /health as every service.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from services.console import pages, placements, security, signin
from services.console.client import ApiProblem
from services.console.render import render
from services.console.settings import ConsoleSettings
from shared.logs import get_logger
from shared.settings import Settings
from shared.web import CorrelationMiddleware

log = get_logger("placematch.console")
STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The console app; given plain `Settings` (as `placematch up` has), its console settings are read
    from the environment (`PLACEMATCH_CONSOLE_*`) beside them."""
    settings = ConsoleSettings.of(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.console_request_timeout_seconds) as http:
            app.state.http = http
            yield

    app = FastAPI(title="placematch console", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.settings = settings
    app.state.oauth = signin.oauth_for(settings)
    @app.middleware("http")
    async def _fresh_token(request: Request, call_next: Any) -> Response:  # inside the session middleware
        if not request.url.path.startswith(("/static/", "/assets/", "/health")):
            await signin.refresh_if_due(request)
        response: Response = await call_next(request)
        return response

    app.add_middleware(SessionMiddleware, secret_key=settings.console_session_secret,
                       session_cookie=security.SESSION_COOKIE, max_age=settings.console_session_max_age,
                       same_site="lax", https_only=settings.secure_cookies)
    app.add_middleware(CorrelationMiddleware)

    @app.middleware("http")
    async def _page_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
        if not request.url.path.startswith(("/static/", "/assets/")):
            response.headers.setdefault("Cache-Control", "no-store")  # pages show people's cases
        return response
    if not (VENDOR / "govuk").is_dir():
        log.warning("console assets missing: run deploy/console-assets.sh", path=str(VENDOR))
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    # govuk-frontend's stylesheet looks for its fonts and images under /assets/
    app.mount("/assets", StaticFiles(directory=VENDOR / "govuk" / "assets", check_dir=False), name="assets")

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "console"}

    @app.exception_handler(security.SignInRequired)
    async def _sign_in(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/sign-in", status_code=303)

    @app.exception_handler(security.WrongRole)
    async def _wrong_role(request: Request, exc: Exception) -> Response:
        needs = exc.needs if isinstance(exc, security.WrongRole) else ()
        return render(request, "error.html", status_code=403, title="You cannot see this page",
                      message=f"This page is for {' or '.join(needs)} accounts.")

    @app.exception_handler(security.CsrfRefused)
    async def _csrf(request: Request, _exc: Exception) -> Response:
        return render(request, "error.html", status_code=403, title="The form has expired",
                      message="The form was not sent from this console's page, or your session changed. "
                              "Go back, reload the page and send it again.")

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: Exception) -> Response:
        problem = exc if isinstance(exc, ApiProblem) else ApiProblem(500, "Error", str(exc))
        if problem.status == 401:
            security.sign_out(request)
            return RedirectResponse("/sign-in", status_code=303)
        status = problem.status if problem.status < 500 else 502
        return render(request, "error.html", status_code=status, title=problem.title, message=problem.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        return render(request, "error.html", status_code=status, title="Page not found" if status == 404 else "Error",
                      message="Check the address, or use the menu." if status == 404 else str(exc))

    app.include_router(signin.router)
    app.include_router(pages.router)
    app.include_router(placements.router)
    return app
