"""Headless Chromium for the dashboard's browser tests: Debian's `chromium` driven through
Playwright, or a skip (a failure on CI) saying how to get the missing piece."""

from __future__ import annotations

import os
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
