"""The listening pages served by the real playground (``python app.py``, launched as a process): the rater
page and its API answers are blind (no system names, no original file names), the teacher endpoints need the
password, new raters per address are limited, 30 raters rating over HTTP at once lose nothing, and the
teacher's CSV exports go to a per-process folder that is cleaned."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from listening_helpers import MODEL_NAMES, REAL_PREFIX, build_tiny, make_checkpoints, run_concurrently

from app_helpers import LaunchedApp
from playground.listening import catalog
from playground.listening.builder import build_test
from playground.listening.config import Scale, TestSpec
from playground.listening.store import RatingStore

PASSWORD = "correct horse"
SECRETS = (*MODEL_NAMES, REAL_PREFIX, "Real data", "white noise", "Anchor:", "speaker/")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The playground with two tiny checkpoints as runs, one ready test and the teacher password set."""
    tmp = tmp_path_factory.mktemp("listen-ui")
    make_checkpoints(tmp / "runs")
    root, folder, manifest, _ = build_tiny(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SASHIMI_TEACHER_PASSWORD", PASSWORD)
        mp.setenv("SASHIMI_LISTENING_DIR", str(root))
        launched = LaunchedApp(tmp, tmp / "runs", tmp / "shipped")
    try:
        yield launched, root, folder, manifest
    finally:
        launched.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode("utf-8", errors="replace")


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def _assert_blind(text: str, where: str) -> None:
    leaks = [s for s in SECRETS if s in text]
    assert not leaks, f"{where} reveals {leaks}"


def test_rater_page_html_and_config_are_blind(app):
    launched, root, folder, manifest = app
    code = manifest["code"]
    html = _get(f"{launched.url}rate?code={code}")
    assert "listen-join" in html  # the real rater page, with its config inlined
    _assert_blind(html, "the /rate HTML")
    config = _get(f"{launched.url}config?page=rate")
    _assert_blind(config, "the /rate page config")
    types = {c["type"] for c in json.loads(config)["components"]}
    assert "dataframe" not in types and "checkboxgroup" not in types  # nothing from the teacher tools
    info = _get(f"{launched.url}gradio_api/info?page=rate")
    _assert_blind(info, "the /rate API description")


def test_rater_api_answers_are_blind_and_enforce_the_rules(app):
    launched, root, folder, manifest = app
    code = manifest["code"]
    client = _client(launched.url)
    out = client.predict(code, {}, api_name="/join")
    text = json.dumps(out, default=str)
    _assert_blind(text, "the /join answer")
    code_box, rater_id, clip_id = out[-5:-2]
    assert code_box == code and clip_id in {c["id"] for c in manifest["clips"]}
    audio = next(o for o in out if isinstance(o, dict) and str(o.get("url", "")).endswith(".wav"))
    with urllib.request.urlopen(audio["url"], timeout=30) as r:
        body, disposition = r.read(), r.headers.get("content-disposition", "")
    assert body[:4] == b"RIFF"
    _assert_blind(audio["url"] + disposition + json.dumps(audio), "the served clip")
    early = client.predict(code, rater_id, clip_id, {}, 3, 4, None, None, api_name="/rate")
    assert "Play the clip" in json.dumps(early, default=str)  # refused with its message; the page stays on this clip
    client.predict(code, rater_id, clip_id, api_name="/played")
    time.sleep(0.1)  # min listening time: 0.8 x 0.1 s
    nxt = client.predict(code, rater_id, clip_id, {}, 3, 4, None, None, api_name="/rate")
    _assert_blind(json.dumps(nxt, default=str), "the /rate answer")
    assert nxt[-3] != clip_id and "2 / 9" in json.dumps(nxt)
    again = client.predict(code, rater_id, clip_id, {}, 3, 4, None, None, api_name="/rate")
    assert "rated this clip already" in json.dumps(again, default=str)
    wrong = client.predict("ZZZZZZ", {}, api_name="/join")
    assert "No open test" in json.dumps(wrong, default=str)


def test_teacher_endpoints_need_the_password(app):
    from gradio_client.exceptions import AppError

    launched, root, folder, manifest = app
    client = _client(launched.url)
    for password in ("", "wrong"):
        with pytest.raises(AppError, match="Wrong teacher password"):
            client.predict(password, folder.name, "t", False, api_name="/listen_results")
        with pytest.raises(AppError, match="Wrong teacher password"):
            client.predict(password, api_name="/listen_unlock")
    unlocked = client.predict(PASSWORD, api_name="/listen_unlock")
    assert set(MODEL_NAMES) <= set(json.dumps(unlocked).replace('"', " ").split())  # models to pick from
    info, summary, pairs, plot, markdown, files = client.predict(PASSWORD, folder.name, "t", False,
                                                                 api_name="/listen_results")
    assert "| Model | Quality | Intelligibility |" in markdown and MODEL_NAMES[0] in markdown
    assert {r[0] for r in summary["data"]} >= set(MODEL_NAMES)
    assert len(files) == 2


def test_new_raters_per_address_are_limited_over_http(app, tmp_path):
    """A test allowing 2 new raters per address and hour: the third browser joining from this computer is
    refused with a message saying why; the first rater can still resume."""
    launched, root, _, _ = app
    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    spec = TestSpec(title="Limited", kind="custom", models=["solo"], clips_per_system=1, clip_seconds=0.05,
                    scales=[Scale("overall", "Overall", "How good is it?")], joins_per_host=2)
    code = catalog.read_manifest(build_test(spec, root, model_roots=[(ck, True)]))["code"]
    client = _client(launched.url)
    first = client.predict(code, {}, api_name="/join")
    client.predict(code, {}, api_name="/join")
    third = client.predict(code, {}, api_name="/join")
    assert "from your network address in the last hour" in json.dumps(third, default=str) and not third[-4]
    resumed = client.predict(code, {code: first[-4]}, api_name="/join")
    assert resumed[-4] == first[-4]


def test_exports_go_to_a_per_process_folder_and_old_ones_are_deleted(tmp_path):
    """The results handler writes its CSVs under this process's own temporary folder (not a fixed shared
    /tmp path), a new folder per export; exports older than an hour are deleted when a new one is made."""
    from listening_helpers import rate_everything

    from playground.listening import results
    from playground.listening.config import ListenSettings
    from playground.ui_listen import TeacherHandlers, export_base

    root, folder, manifest, _ = build_tiny(tmp_path, models=["alpha-model"], real_dir=None, gold_noise=0,
                                           clips_per_system=1)
    rate_everything(root, manifest["code"], lambda c, s: 3)
    handlers = TeacherHandlers(ListenSettings(root=root, password="pw"))
    info, *_, files = handlers.results("pw", folder.name, "t", False, None)
    assert "flagged as suspicious" in info
    base = export_base()
    assert Path(files[0]).parent.parent == base and base.name.startswith("sashimi-listening-exports-")
    assert base != Path(tempfile.gettempdir()) / "sashimi-listening-exports"
    assert [Path(f).name for f in files] == ["ratings.csv", "summary.csv"]
    old = Path(files[0]).parent
    hour_ago = time.time() - results.EXPORT_MAX_AGE_S - 60
    os.utime(old, (hour_ago, hour_ago))
    *_, newer = handlers.results("pw", folder.name, "t", False, None)
    assert not old.exists() and all(Path(f).is_file() for f in newer) and Path(newer[0]).parent != old


@pytest.mark.slow
def test_30_raters_over_http_lose_nothing(app, tmp_path):
    """30 browser-like clients (gradio_client) join a fresh 20-clip test and rate everything at once over
    the app's HTTP API: exactly 600 ratings arrive."""
    launched, root, _, _ = app
    folder = _fresh_test(tmp_path, root)
    code = catalog.read_manifest(folder)["code"]
    clients = [_client(launched.url) for _ in range(30)]
    errors, latencies, start = [], [], threading.Barrier(30)

    def rater(client):
        try:
            start.wait()
            out = client.predict(code, {}, api_name="/join")
            rater_id, clip_id = out[-4], out[-3]
            for _ in range(20):
                client.predict(code, rater_id, clip_id, api_name="/played")
                t0 = time.perf_counter()
                out = client.predict(code, rater_id, clip_id, {}, 4, None, None, None, api_name="/rate")
                latencies.append(time.perf_counter() - t0)
                clip_id = out[-3]
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    wall = run_concurrently(rater, clients)
    latencies.sort()
    print(f"30 HTTP raters x 20 clips: {wall:.1f} s wall, {600 / wall:.1f} ratings/s, /rate latency median "
          f"{1e3 * latencies[len(latencies) // 2]:.0f} ms, p95 {1e3 * latencies[int(0.95 * len(latencies))]:.0f} ms")
    assert errors == []
    assert RatingStore(folder / catalog.DB).count() == 600


def _fresh_test(tmp_path, root):
    """A 20-clip, one-scale test built into the app's listening folder (the app finds it by its code)."""
    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    spec = TestSpec(title="Load test", kind="custom", models=["solo"], anchor="noise", clips_per_system=10,
                    clip_seconds=0.05, scales=[Scale("overall", "Overall", "How good is it?")],
                    min_listen_fraction=0.0, joins_per_host=30)  # all 30 clients come from 127.0.0.1
    return build_test(spec, root, model_roots=[(ck, True)])


def test_the_page_load_answer_never_undoes_a_join(tmp_path):
    """The rater page's load and Join are answered in parallel: on a busy server a fast student's Join can be
    answered first, and the load's join screen then wiped its message or first clip (a full CI run saw it: the
    wrong-code message never stayed on the page). Without ?code= the load changes nothing; after a Join on the
    same page session it changes nothing either; a fresh page with ?code= is still prefilled."""
    import gradio as gr
    from starlette.requests import Request

    from playground.listening.config import ListenSettings
    from playground.ui_listen import RATER_HINT, RATER_OUTPUTS, RaterHandlers

    root, _, manifest, _ = build_tiny(tmp_path)
    code = manifest["code"]

    def request(session: str, query: str = "") -> gr.Request:
        scope = {"type": "http", "method": "GET", "path": "/rate", "query_string": query.encode(),
                 "headers": [(b"user-agent", b"pytest")], "client": ("10.0.0.7", 5000)}
        return gr.Request(request=Request(scope), session_hash=session)

    h = RaterHandlers(ListenSettings(root=root))
    unchanged = h.on_load({}, request("a"))
    assert len(unchanged) == RATER_OUTPUTS and all(isinstance(x, type(gr.skip())) for x in unchanged)
    refused = h.join("ZZZZZZ", {}, request("b"))
    assert "No open test" in refused[RATER_HINT]
    late_load = h.on_load({}, request("b", f"code={code}"))  # the load's answer, computed after the Join
    assert all(isinstance(x, type(gr.skip())) for x in late_load)
    fresh = h.on_load({}, request("c", f"code={code}"))
    assert fresh[-1] == code and fresh[RATER_HINT] == ""  # prefilled, as before
