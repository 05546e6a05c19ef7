"""Helpers for the browser tests: Debian's Chromium driven by Playwright (never `playwright install`), and
screenshots kept under the pytest tmp dir (and copied to $E2E_SCREENSHOTS when set)."""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
LOST_CLICK_S = 3  # a click that sent no request in this long is taken as lost and repeated (`click_until`)
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
    Join), calling before() ahead of each try when given (e.g. reload the page and fill the form).

    In full CI runs on a loaded 2-core machine such a click, right after a page load or during a running
    generation, sometimes showed no answer for 60-90 s. Within a try a click that sent no request within
    LOST_CLICK_S is repeated (a page not yet listening); once a request went out, the try waits for the answer.
    A click that never gets its answer still fails, saying how many clicks were made and which requests went
    out: that report showed the rater's Join did reach the server, and the page's load answer, arriving after
    it, wiped its message (fixed in `RaterHandlers.on_load`)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = button.page
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url.split("/gradio_api/")[-1]) if r.method == "POST" else None)
    report = []
    for attempt in range(tries):
        if before is not None:
            before()
        posts.clear()
        deadline, clicks = time.monotonic() + each_ms / 1000, 0
        while time.monotonic() < deadline:
            if not posts:  # nothing went out yet: (re)click
                button.click()
                clicks += 1
            left_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                expected.wait_for(timeout=left_ms if posts else min(LOST_CLICK_S * 1000, left_ms))
                return
            except PlaywrightTimeout:
                pass
        report.append(f"try {attempt + 1}: {clicks} clicks, requests sent: {posts[:6] or 'none'}")
    raise AssertionError(f"no answer to {button} after {tries} tries of {each_ms / 1000:.0f} s: " + "; ".join(report))
