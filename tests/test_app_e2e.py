"""Browser end-to-end test: Debian's Chromium driven by Playwright against the launched app. Uploads a clip,
clicks Generate, waits for the result audio and its spectrogram, and saves screenshots under the pytest tmp
dir (set E2E_SCREENSHOTS=<folder> to also copy them there). Never runs `playwright install`."""
from __future__ import annotations

import re

import pytest
from browser_helpers import BROWSER_TEST, chromium, click_until, shot

from app_helpers import ROOT, LaunchedApp, make_tiny_checkpoint

pytestmark = BROWSER_TEST


@pytest.fixture(scope="module")
def browser_on_app(tmp_path_factory):
    """One app process and one Chromium for the module; each test opens its own page (fresh Gradio state)."""
    tmp = tmp_path_factory.mktemp("e2e")
    make_tiny_checkpoint(tmp / "runs" / "tiny")
    with LaunchedApp(tmp, tmp / "runs", tmp / "shipped") as app, chromium() as browser:
        yield browser, app, tmp


@pytest.fixture
def page_on_app(browser_on_app):
    """A new browser context and page on the app, loaded and ready; closed after the test."""
    browser, app, tmp = browser_on_app
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.locator("#generate-btn").wait_for()
    page.locator("#prompt-audio input[type=file]").wait_for(state="attached")  # the page is interactive
    yield page, tmp
    context.close()


def _set_length(page, seconds: str) -> None:
    length = page.locator("#length-slider input[type=number]")
    length.fill(seconds)
    length.press("Enter")


def test_upload_generate_shows_audio_and_spectrogram(page_on_app):
    page, tmp = page_on_app
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(page.locator("#model-picker input")).to_have_value(re.compile("^tiny"))  # filled on page load
    page.locator("#prompt-audio input[type=file]").set_input_files(str(ROOT / "assets" / "digit_seven.wav"))
    page.locator("#prompt-audio audio[src]").first.wait_for(state="attached")  # the upload reached the player
    _set_length(page, "0.02")
    page.locator("#generate-btn").click()
    page.locator("#result-plot-0 .js-plotly-plot").wait_for(timeout=240_000)
    page.locator("#result-audio-0 audio[src]").first.wait_for(state="attached")  # the player has the WAV
    expect(page.locator("#result-audio-0").get_by_text("0:00").first).to_be_visible()
    summary = page.locator("#results-summary").inner_text()
    assert "seed" in summary and "prompt 0.6" in summary
    assert page.locator("#result-plot-0").get_by_text("prompt | continuation").count() >= 1
    assert shot(page, tmp, "generate.png").stat().st_size > 10_000


def test_other_tabs_render(page_on_app):
    page, tmp = page_on_app
    page.get_by_role("tab", name="Models").click()
    page.locator("#models-table").get_by_role("gridcell", name="tiny", exact=True).first.wait_for()
    shot(page, tmp, "models.png")
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("heading", name="1 · Data set").wait_for()
    page.get_by_text("sc09-synth: not built").wait_for()  # the Timer polled the build status
    shot(page, tmp, "train.png")


def test_new_checkpoint_reaches_the_model_picker(page_on_app):
    """A checkpoint written while the page is open (as a training run does) shows up without a reload."""
    page, tmp = page_on_app
    make_tiny_checkpoint(tmp / "runs" / "fresh-run" / "checkpoint", steps=100)
    page.wait_for_timeout(6000)  # the Timer polls every 2 s
    page.locator("#model-picker input").click()
    page.get_by_role("option", name=re.compile("^fresh-run")).wait_for()
    page.keyboard.press("Escape")


def test_non_audio_upload_is_refused_on_upload_and_generate_still_works(page_on_app, tmp_path):
    """A file that is not audio is reported as soon as it is uploaded, the prompt is cleared (so the next
    upload works), and Generate then runs unconditionally."""
    page, tmp = page_on_app
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio at all\n" * 50)
    page.locator("#prompt-audio input[type=file]").set_input_files(str(notes))
    page.get_by_text("is not an audio file we can read").first.wait_for()  # before any Generate click
    page.wait_for_timeout(800)  # the toast fades in
    shot(page, tmp, "bad_upload.png", full_page=False)  # the toast is fixed to the viewport
    page.wait_for_function("() => !document.querySelector('#prompt-audio audio[src]')")  # the prompt was cleared
    page.locator("#prompt-audio input[type=file]").wait_for(state="attached")
    _set_length(page, "0.02")
    page.locator("#generate-btn").click()  # no prompt: unconditional, and the app still works
    page.locator("#results-summary").get_by_text("no prompt").first.wait_for(timeout=240_000)


def test_typed_length_above_the_limit_is_reported_and_set_to_the_limit(page_on_app):
    page, tmp = page_on_app
    _set_length(page, "999")
    page.get_by_text("Length (s) 999 is outside what this server allows").first.wait_for()
    page.wait_for_function("() => document.querySelector('#length-slider input[type=number]').value === '30'")
    shot(page, tmp, "length_limit.png", full_page=False)


def test_progress_in_view_busy_click_explained_and_seed_box_shows_the_seed_used(page_on_app):
    """A long generation shows its progress on the results summary (in view, not in the collapsed details);
    a second Generate click says a generation is already running; the seed box always holds the seed of the
    audio shown, so unticking 'New random seed' reproduces it."""
    page, tmp = page_on_app
    until_stop = page.locator("#until-stop input")
    until_stop.check()  # runs until Stop: the second click cannot race the end of a fast generation
    seed_box = page.locator("#seed input")
    page.locator("#generate-btn").click()
    page.locator("#results-summary").get_by_text(re.compile(r"\d+ × [\d,]+/[\d,]+ samples")).first.wait_for(
        timeout=240_000)
    shot(page, tmp, "progress.png", full_page=False)
    before = seed_box.input_value()
    click_until(page.locator("#generate-btn"), page.locator("#estimate").get_by_text("already running on this page"))
    assert seed_box.input_value() == before  # nothing new generated yet: the box is unchanged
    page.locator("#stop-btn").click()
    page.locator("#results-summary").get_by_text("stopped early").wait_for(timeout=120_000)
    used = re.search(r"seed (\d+)", page.locator("#results-summary").inner_text()).group(1)
    page.wait_for_function(f"() => document.querySelector('#seed input').value === '{used}'")
    page.get_by_text("New random seed each time").click()  # untick: the next run reuses the seed shown
    until_stop.uncheck()
    _set_length(page, "0.05")
    page.locator("#generate-btn").click()
    page.wait_for_function("() => !document.querySelector('#results-summary').innerText.includes('stopped')",
                           timeout=240_000)
    assert re.search(r"seed (\d+)", page.locator("#results-summary").inner_text()).group(1) == used


def test_live_player_plays_while_the_continuation_is_generated(page_on_app):
    """Sound starts in the live player while the progress bar still runs; the full result follows."""
    page, tmp = page_on_app
    page.locator("#until-stop input").check()  # runs until Stop, so it is still running when the player plays
    page.locator("#generate-btn").click()
    page.wait_for_function("() => { const a = document.querySelector('#live-audio audio');"
                           " return a && !a.paused && a.currentTime > 0.2; }", timeout=240_000)
    progress = page.locator("#results-summary").get_by_text(re.compile(r"\d+ × [\d,]+/[\d,]+ samples"))
    progress.first.wait_for(timeout=10_000)  # still generating (it runs until Stop) while the player plays
    shot(page, tmp, "live.png", full_page=False)
    page.locator("#stop-btn").click()
    page.locator("#results-summary").get_by_text("stopped early").wait_for(timeout=120_000)
