"""Browser end-to-end test of a classroom listening test on the real playground (``python app.py``): the
teacher unlocks the Listen tab, builds a test from two tiny models + real data + a noise anchor (real
generation), two raters (separate browsers, phone-sized) join with the code on /rate, play and rate every
clip, one reloads mid-way and resumes, and the teacher sees the summary. Debian's Chromium via Playwright;
never `playwright install`. Screenshots go to the pytest tmp dir (and to $E2E_SCREENSHOTS when set)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_helpers import BROWSER_TEST, chromium, click_until, shot
from listening_helpers import MODEL_NAMES, make_checkpoints, make_real_folder

from app_helpers import LaunchedApp

PASSWORD = "e2e-teacher"

pytestmark = BROWSER_TEST


def _number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Tab")


def _rate_clip(page, scores: tuple[int, int]) -> None:
    """Play the clip, wait for the server to unlock Submit, answer both scales, submit."""
    before = page.locator("#listen-progress b").inner_text()
    page.locator("#listen-audio button.play-pause-button").click()
    page.locator("#listen-submit:not([disabled])").wait_for()
    for i, score in enumerate(scores):
        page.locator(f"#listen-scale-{i} label").nth(score - 1).click()
    page.locator("#listen-submit").click()
    page.wait_for_function(
        "b => { const p = document.querySelector('#listen-progress b'); const d = document.querySelector("
        "'#listen-done'); return (p && p.innerText !== b) || (d && d.innerText.includes('Thank you')); }",
        arg=before)


def _rater(browser, url: str, code: str, scores: tuple[int, int], tmp: Path, name: str, reload_after: int = 0):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}rate?code={code}")
    page.wait_for_function("() => { const e = document.querySelector('#listen-code input, #listen-code textarea');"
                           " return e && e.value; }")
    page.locator("#listen-join").click()
    page.locator("#listen-progress b").wait_for()
    total = int(page.locator("#listen-progress b").inner_text().split("/")[1])
    done = 0
    while not page.locator("#listen-done").inner_text().startswith("Thank you"):
        if done == 1:
            shot(page, tmp, f"{name}-clip.png")
        _rate_clip(page, scores)
        done += 1
        if done == reload_after:  # a reload resumes at the next clip (rater id kept in the browser)
            page.reload()
            page.wait_for_function(f"() => document.querySelector('#listen-progress b')?.innerText.startsWith("
                                   f"'{done + 1} /')")
    assert done == total
    shot(page, tmp, f"{name}-done.png")
    context.close()
    return total


def test_two_raters_complete_a_test_and_the_teacher_sees_the_summary(tmp_path):
    pytest.importorskip("playwright.sync_api")  # skip before building anything
    make_checkpoints(tmp_path / "runs")
    make_real_folder(tmp_path / "data" / "digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SASHIMI_TEACHER_PASSWORD", PASSWORD)
        mp.setenv("SASHIMI_LISTENING_DIR", str(tmp_path / "listening"))
        app = LaunchedApp(tmp_path, tmp_path / "runs", tmp_path / "shipped")
    with app, chromium() as browser:
        teacher = browser.new_page(viewport={"width": 1300, "height": 1000})
        teacher.set_default_timeout(120_000)
        teacher.goto(app.url)
        teacher.get_by_role("tab", name="Listen").click()
        teacher.locator("#listen-password input").fill(PASSWORD)
        teacher.locator("#listen-unlock").click()
        for name in MODEL_NAMES:
            teacher.locator("#listen-systems label").filter(has_text=name).click()
        teacher.get_by_text("Speech: quality + intelligibility").click()
        _number(teacher, "listen-clips", "2")
        _number(teacher, "listen-seconds", "0.1")
        teacher.locator("#listen-build").click()
        teacher.locator("#listen-build-status").filter(has_text="Ready").wait_for(timeout=240_000)
        info = teacher.locator("#listen-test-info").filter(has_text="Join code")
        info.wait_for()
        code = re.search(r"Join code: ([A-Z2-9]{6})", info.inner_text()).group(1)
        shot(teacher, tmp_path, "teacher-built.png")

        total = _rater(browser, app.url, code, (2, 4), tmp_path, "rater-a", reload_after=3)
        assert total == 2 * 4 + 1  # 2 models + real data + noise anchor, 2 clips each, + 1 gold clip
        _rater(browser, app.url, code, (1, 3), tmp_path, "rater-b")

        teacher.locator("#listen-show-results").click()
        summary = teacher.locator("#listen-summary")
        summary.filter(has_text=MODEL_NAMES[0]).wait_for()
        text = summary.inner_text()
        for system in (*MODEL_NAMES, "Real data", "Anchor: white noise"):
            assert system in text
        assert "1.50" in text and "3.50" in text  # quality (2 and 1) and intelligibility (4 and 3)
        info_text = teacher.locator("#listen-results-info").inner_text()
        assert "2 raters joined, 2 finished" in info_text and "0 excluded" in info_text
        markdown = teacher.locator("#listen-markdown").inner_text()
        assert "| Model | Quality | Intelligibility |" in markdown
        teacher.locator("#listen-summary").scroll_into_view_if_needed()
        shot(teacher, tmp_path, "teacher-results.png")


def test_rater_refusals_show_their_message_and_keep_the_page_usable(tmp_path):
    """A wrong code and a Submit right after Play are refused with the server's message on the page; the code
    box, the player, the answers and Submit stay usable, and the same clip is then rated normally."""
    pytest.importorskip("playwright.sync_api")  # skip before building anything
    from playground.listening import catalog
    from playground.listening.builder import build_test
    from playground.listening.config import Scale, TestSpec

    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    spec = TestSpec(title="Refusals", kind="custom", models=["solo"], clips_per_system=2, clip_seconds=8.0,
                    scales=[Scale("overall", "Overall", "How good is it?")])
    root = tmp_path / "listening"
    code = catalog.read_manifest(build_test(spec, root, model_roots=[(ck, True)]))["code"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SASHIMI_LISTENING_DIR", str(root))
        app = LaunchedApp(tmp_path, tmp_path / "runs", tmp_path / "shipped")
    with app, chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.set_default_timeout(60_000)
        box = page.locator("#listen-code input, #listen-code textarea").first

        def open_and_fill():
            page.goto(f"{app.url}rate")
            box.fill("ZZZZZZ")

        click_until(page.locator("#listen-join"), page.locator("#listen-hint").filter(has_text="No open test"),
                    before=open_and_fill)
        shot(page, tmp_path, "rater-wrong-code.png")
        box.fill(code)  # the same box and button still work
        page.locator("#listen-join").click()
        page.locator("#listen-progress b").filter(has_text="1 /").wait_for()
        page.locator("#listen-audio button.play-pause-button").click()
        page.locator("#listen-submit:not([disabled])").wait_for()
        page.locator("#listen-scale-0 label").nth(2).click()
        page.locator("#listen-submit").click()  # well before 6.4 s (0.8 x 8 s) of listening, even on a loaded machine
        page.locator("#listen-hint").filter(has_text="Listen to").wait_for()
        shot(page, tmp_path, "rater-early-submit.png")
        assert page.locator("#listen-progress b").inner_text().startswith("1 /")
        assert page.locator(".error").count() == 0  # no component is covered by an error badge
        page.wait_for_timeout(8500)  # the clip has played to the end by now
        page.locator("#listen-submit").click()
        page.locator("#listen-progress b").filter(has_text="2 /").wait_for()
