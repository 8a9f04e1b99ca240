"""Fixtures of the browser tests: the stack (four services + console) and Debian's Chromium."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.stack import Stack

CHROMIUM = Path(os.environ.get("PLACEMATCH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
VENDOR = Path(__file__).resolve().parents[2] / "services" / "console" / "static" / "vendor"


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (VENDOR / "govuk").is_dir() or not (VENDOR / "axe" / "axe.min.js").is_file():
        return "console assets missing (deploy/console-assets.sh)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    started = time.monotonic()
    stack = Stack(tmp_path_factory.mktemp("console") / "var")
    stack.data_dir.mkdir(parents=True)
    stack.start()
    print(f"stack up in {time.monotonic() - started:.1f} s")
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots of this run only (cleared once per session)."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser(artifacts: Path) -> Iterator[object]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps an event loop
    running in this thread while it is started, and every later test that calls asyncio.run (most
    of the suite, when `make test` runs tests/ in one process) would fail under it."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()
