"""Headless Chromium for the dashboard's browser tests: Debian's `chromium` driven through
Playwright, or a skip (a failure on CI) saying how to get the missing piece."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
INSTALL = "apt-get install chromium"


def require_browser() -> Any:
    """Playwright's sync API, or skip (fail on CI) with how to get the missing piece."""
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} is missing: the dashboard's browser test drives Debian's "
                   f"Chromium; install it with `{INSTALL}`")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright import sync_api
    except ImportError:
        message = "playwright is not installed: `make install` installs the locked dev dependencies"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


@contextmanager
def chromium_page(sync_api: Any, **page_options: Any) -> Iterator[Any]:
    """A page of a fresh headless Chromium (10 s default timeout), closed with its browser."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     timeout=30_000)
        try:
            page = browser.new_page(**page_options)
            page.set_default_timeout(10_000)
            yield page
        finally:
            browser.close()
