"""Helpers for the browser tests: Debian's Chromium driven by Playwright (never `playwright install`), and
screenshots kept under the pytest tmp dir (and copied to $E2E_SCREENSHOTS when set)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
BROWSER_TEST = [pytest.mark.e2e,
                pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs chromium (apt-get install chromium)")]


@contextmanager
def chromium():
    """A headless Chromium (playwright Browser), closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def shot(page, tmp: Path, name: str, full_page: bool = True) -> Path:
    """Screenshot `page` to tmp/name (full_page=False for what is fixed to the viewport, e.g. toasts)."""
    path = tmp / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("E2E_SCREENSHOTS"):
        Path(os.environ["E2E_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["E2E_SCREENSHOTS"]) / name)
    return path


def click_until(button, expected, tries: int = 3, each_ms: int = 30_000, before=None) -> None:
    """Click `button` until the locator `expected` shows (for clicks that are safe to repeat, e.g. a refused
    Join), calling before() ahead of each try when given (e.g. reload the page and fill the form). In full CI
    runs on a loaded 2-core machine such a click, right after a page load or during a running generation, went
    unanswered for 60-90 s (3 runs of 5; never when the test ran alone or beside a CPU hog): a click that never
    gets its answer still fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        if before is not None:
            before()
        button.click()
        try:
            expected.wait_for(timeout=each_ms)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
