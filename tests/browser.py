"""A real headless Chromium (Debian's, driven by Playwright) for the web pages' end-to-end tests."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium(height: int = 1000) -> Iterator[BrowserContext]:
    """A browser context 1400 pixels wide and `height` high, with a throwaway profile removed afterwards."""
    user_data = Path(f"/tmp/pulse-chromium-{uuid.uuid4().hex[:8]}")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": height})
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(user_data, ignore_errors=True)
