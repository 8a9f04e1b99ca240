"""The four services and the console, served by uvicorn on free ports in a background thread
(embedded: SQLite files and the local bus under one data directory), as `placematch up` runs them."""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from services import SERVICES
from services.console.app import create_app as create_console
from services.console.settings import CONSOLE_OFFSET, PLACEMENT_OFFSET, ConsoleSettings
from shared.settings import Settings


def free_base_port() -> int:
    """A base port N with N+1..N+6 free."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] - 1
        if base + CONSOLE_OFFSET >= 65535:
            continue
        try:
            for offset in range(1, CONSOLE_OFFSET + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no six consecutive free ports")


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test's process keeps its own
        return None

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


class Stack:
    def __init__(self, data_dir: Path, *, dev_sign_in: bool = True, **overrides: Any) -> None:
        """`overrides`: more settings for the services and the console (an OIDC issuer, say)."""
        self.data_dir = data_dir
        self.base = free_base_port()
        common = {"data_dir": data_dir, "base_port": self.base, "relay_poll_seconds": 0.1,
                  "webhook_allow_private": True, "email_enabled": False, "rate_limits_enabled": False,
                  "deadline_check_seconds": 1.0, **overrides}
        self.common = common
        self.settings = Settings(**common)
        self.console_settings = ConsoleSettings(**common, console_dev_sign_in=dev_sign_in)
        self._servers: list[_Server] = []
        self._thread: threading.Thread | None = None

    def settings_for(self, service: str) -> Settings:
        """The service's own settings class (services/<service>/settings.py) where it has one, so that
        its knobs here (email off, loopback webhooks, a quick deadline check) reach it."""
        try:
            module = importlib.import_module(f"services.{service}.settings")
        except ModuleNotFoundError:
            return self.settings
        own = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Settings)
               and c is not Settings and c.__module__ == module.__name__]
        return own[0](**self.common) if own else self.settings

    def url(self, service: str) -> str:
        if service == "console":
            return f"http://127.0.0.1:{self.base + CONSOLE_OFFSET}"
        if service == "placement" and service not in SERVICES:
            return f"http://127.0.0.1:{self.base + PLACEMENT_OFFSET}"
        return f"http://127.0.0.1:{self.base + SERVICES.index(service) + 1}"

    def start(self, timeout: float = 90) -> None:
        apps = [(importlib.import_module(f"services.{s}.app").create_app(self.settings_for(s)), self.base + i + 1)
                for i, s in enumerate(SERVICES)]
        if "placement" not in SERVICES:  # the placement service, at base + 5, until `up` serves it
            apps.append((importlib.import_module("services.placement.app").create_app(self.settings_for("placement")),
                         self.base + PLACEMENT_OFFSET))
        apps.append((create_console(self.console_settings), self.base + CONSOLE_OFFSET))
        self._servers = [_Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                lifespan="on", log_config=None)) for app, port in apps]

        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers), return_exceptions=True)

        def run() -> None:
            asyncio.run(serve_all())

        self._thread = threading.Thread(target=run, name="placematch-stack", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.started for s in self._servers) and self._ready():
                return
            if not self._thread.is_alive():
                raise RuntimeError("the stack stopped while starting")
            time.sleep(0.1)
        raise TimeoutError(f"the stack was not ready within {timeout} s")

    def _ready(self) -> bool:
        try:
            for service in (*SERVICES, *(() if "placement" in SERVICES else ("placement",))):
                if httpx.get(self.url(service) + "/ready", timeout=2).status_code != 200:
                    return False
            return httpx.get(self.url("console") + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the stack did not stop within 60 s"


def wait_until(condition: Any, *, timeout: float = 20, interval: float = 0.1, message: str = "condition") -> None:
    """Poll `condition()` until it is true; fail after `timeout` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
