"""Listening-test storage and flow with real files: SQLite schema and rules (played first, UNIQUE ratings),
30 concurrent raters losing nothing, the builder's clips and manifest (real generation with a tiny model),
the rater session (blind order, resume, closed tests) and the CLI."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
import soundfile as sf
from listening_helpers import MODEL_NAMES, REAL_PREFIX, build_tiny, make_checkpoints, make_real_folder, run_concurrently

from playground.listening import catalog, session
from playground.listening.__main__ import main as cli
from playground.listening.builder import BuildRegistry, build_test
from playground.listening.config import ListeningError, Scale, TestSpec
from playground.listening.store import AlreadyRatedError, NotPlayedError, RatingStore, listening_time


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("built"))


# ------------------------------------------------------------------------------------------------ store
def test_store_rules(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite").init()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.add_rater("r1", ["a", "b"], now=100.0)
    with pytest.raises(ListeningError):
        store.add_rater("r1", ["a"])
    with pytest.raises(NotPlayedError):
        store.add_ratings("r1", "a", {"q": 3}, now=101.0)
    store.record_play("r1", "a", now=102.0)
    with pytest.raises(NotPlayedError, match="whole clip"):
        store.add_ratings("r1", "a", {"q": 3}, clip_seconds=2.0, min_listen_s=1.6, now=103.0)
    store.record_play("r1", "a", "pause", now=103.5)
    store.record_play("r1", "a", "play", now=104.0)
    got = store.add_ratings("r1", "a", {"q": 3, "i": 5}, clip_seconds=2.0, min_listen_s=1.6, now=104.5)
    assert got == {"decision_s": 2.5, "listen_s": 2.0, "n_plays": 2}  # 1.5 s + 0.5 s of playback
    with pytest.raises(AlreadyRatedError):
        store.add_ratings("r1", "a", {"q": 4}, now=105.0)
    with pytest.raises(ListeningError, match="1 to 5"):
        store.add_ratings("r1", "b", {"q": 6})
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError):  # the constraint itself
        conn.execute("INSERT INTO ratings (rater_id, clip_id, scale, score, created, first_play, decision_s, "
                     "listen_s, n_plays) VALUES ('r1', 'a', 'q', 2, 0, 0, 0, 0, 1)")
    assert [(r["clip_id"], r["scale"], r["score"]) for r in store.ratings()] == [("a", "q", 3), ("a", "i", 5)]
    assert store.rater("r1")["rated"] == {"a"} and store.rater("nobody") is None
    assert store.raters() == [{"rater_id": "r1", "created": 100.0, "n_clips": 2, "n_rated": 1}]
    store.set_open(False)
    assert not store.is_open()


def test_listening_time():
    assert listening_time([("play", 0.0), ("stop", 2.0)], 5.0, 2.0) == 2.0
    assert listening_time([("play", 0.0)], 10.0, 3.0) == 3.0  # still playing at submit: capped at the clip
    assert listening_time([("play", 0.0), ("play", 1.0), ("pause", 1.5)], 4.0, 2.0) == 1.5  # replay
    assert listening_time([("pause", 0.0)], 1.0, 1.0) == 0.0


def test_30_concurrent_raters_lose_nothing(tmp_path):
    """30 threads, one connection each per call, 20 (play + rate) each on a real SQLite file -> exactly 600
    rows; a repeated rating in every thread is refused by the UNIQUE constraint, not stored."""
    store = RatingStore(tmp_path / "ratings.sqlite").init()
    clips = [f"clip{i:02d}" for i in range(20)]
    for r in range(30):
        store.add_rater(f"rater{r}", clips)
    errors, refused, latencies = [], [], []
    start = threading.Barrier(30)

    def rater(r: int):
        try:
            start.wait()
            for c in clips:
                RatingStore(store.path).record_play(f"rater{r}", c)
                t0 = time.perf_counter()
                RatingStore(store.path).add_ratings(f"rater{r}", c, {"quality": 1 + (r + len(c)) % 5})
                latencies.append(time.perf_counter() - t0)
            try:
                store.add_ratings(f"rater{r}", clips[0], {"quality": 5})
            except AlreadyRatedError:
                refused.append(r)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    wall = run_concurrently(rater, list(range(30)))
    latencies.sort()
    print(f"30 raters x 20 ratings: {wall:.2f} s wall, {1200 / wall:.0f} write transactions/s, rating latency "
          f"median {1e3 * latencies[300]:.1f} ms, p99 {1e3 * latencies[594]:.1f} ms, max {1e3 * latencies[-1]:.1f} ms")
    assert errors == []
    assert store.count() == 600 and len(refused) == 30
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT rater_id || clip_id) FROM ratings").fetchone()[0] == 600


# ---------------------------------------------------------------------------------------------- builder
def test_builder_writes_blind_clips_and_manifest(built):
    root, folder, manifest, _ = built
    assert catalog.read_status(folder)["state"] == "ready"
    assert len(manifest["code"]) == 6 and set(manifest["code"]) <= set(catalog.CODE_ALPHABET)
    kinds = [c["kind"] for c in manifest["clips"]]
    assert kinds.count("model") == 4 and kinds.count("real") == 2 and kinds.count("anchor") == 2
    assert kinds.count("gold-noise") == 1
    assert [s["name"] for s in manifest["systems"]] == [*MODEL_NAMES, "Real data", "Anchor: white noise"]
    files = sorted(p.name for p in (folder / "clips").iterdir())
    assert files == sorted(f"{c['id']}.wav" for c in manifest["clips"])
    for c in manifest["clips"]:
        info = sf.info(str(folder / c["file"]))
        assert (info.samplerate, info.frames, info.subtype) == (16000, 1600, "PCM_16")  # all the same length
        assert not any(n in c["file"] for n in (*MODEL_NAMES, REAL_PREFIX, "real", "noise", "anchor"))
    gold = next(c for c in manifest["clips"] if c["kind"] == "gold-noise")
    assert gold["gold"] == {"scale": "quality", "max": 2} and gold["system"] is None
    assert {c["source"].split("/")[0] for c in manifest["clips"] if c["kind"] == "real"} == {"speaker"}
    assert catalog.find_by_code(root, manifest["code"].lower()) == folder
    with pytest.raises(ListeningError):
        catalog.find_by_code(root, "ZZZZZZ")


def test_builder_prompt_and_temperature_anchor(tmp_path):
    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    prompt = make_real_folder(tmp_path / "p", n=1) / "speaker" / f"{REAL_PREFIX}-0.wav"
    spec = TestSpec(title="Prompted", kind="custom", models=["solo"], anchor="temperature", clips_per_system=2,
                    clip_seconds=0.05, prompt_file=str(prompt), prompt_seconds=0.1,
                    scales=[Scale("overall", "Overall", "How good is it?")])
    progress = []
    folder = build_test(spec, tmp_path / "root", model_roots=[(ck, True)], progress=lambda f, m: progress.append(f))
    manifest = catalog.read_manifest(folder)
    assert [s["name"] for s in manifest["systems"]] == ["solo", "Anchor: solo at T=2"]
    assert all(c["samples"] == 1600 + 800 for c in manifest["clips"])  # prompt + continuation
    assert (folder / "prompt.wav").is_file() and manifest["spec"]["prompt_file"].endswith("prompt.wav")
    assert progress == sorted(progress) and progress[-1] > 0.9
    assert manifest["scales"] == [{"id": "overall", "label": "Overall", "question": "How good is it?",
                                   "anchors": ["Bad", "Poor", "Fair", "Good", "Excellent"]}]


@pytest.mark.parametrize("bad, message", [
    (dict(models=[], real_dir=None, anchor="none"), "at least one system"),
    (dict(anchor="temperature", models=[]), "select a model"),
    (dict(clips_per_system=0), "Clips per system"),
    (dict(gold_real=1), "real-data folder"),
    (dict(kind="custom"), "scales"),
    (dict(clip_seconds=100), "Clip length"),
])
def test_spec_checks(bad, message):
    spec = dict(title="t", models=["m"], anchor="noise")
    spec.update(bad)
    with pytest.raises(ListeningError, match=message):
        TestSpec(**spec).check()


def test_background_build_reports_progress_and_can_be_cancelled(tmp_path):
    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    registry = BuildRegistry()
    spec = TestSpec(title="bg", models=["solo"], clips_per_system=2, clip_seconds=0.1)
    job = registry.start(spec, tmp_path / "root", model_roots=[(ck, True)])
    folder = catalog.test_dir(tmp_path / "root", job["test_id"])
    deadline = time.monotonic() + 120
    while catalog.read_status(folder)["state"] == "building" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert catalog.read_status(folder)["state"] == "ready"
    assert catalog.read_manifest(folder)["code"] == job["code"]
    slow = TestSpec(title="slow", models=["solo"], clips_per_system=1, clip_seconds=20.0)
    job = registry.start(slow, tmp_path / "root", model_roots=[(ck, True)])
    folder = catalog.test_dir(tmp_path / "root", job["test_id"])
    while catalog.read_status(folder)["progress"] < 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert registry.cancel(job["test_id"])
    while job["test_id"] in registry.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert catalog.read_status(folder)["state"] == "cancelled"
    assert not (folder / catalog.MANIFEST).exists()


# ---------------------------------------------------------------------------------------------- session
def test_rater_flow_is_blind_enforced_and_resumable(built):
    root, folder, manifest, _ = built
    code = manifest["code"]
    screen = session.join(root, code)
    assert (screen.position, screen.total) == (1, len(manifest["clips"]))
    public = json.dumps(screen.public())
    assert not any(n in public for n in (*MODEL_NAMES, "Real data", "white noise", "Anchor", REAL_PREFIX))
    assert screen.audio[0] == 16000 and screen.audio[1].dtype.name == "int16"
    scores = {"quality": 3, "intelligibility": 4}
    with pytest.raises(NotPlayedError):
        session.rate(root, code, screen.rater_id, screen.clip_id, scores)
    with pytest.raises(ListeningError, match="every question"):
        session.rate(root, code, screen.rater_id, screen.clip_id, {"quality": 3})
    other = session.join(root, code)
    with pytest.raises(ListeningError, match="not part of your test"):
        session.played(root, code, screen.rater_id, "deadbeef0000")
    session.played(root, code, screen.rater_id, screen.clip_id)
    first = screen.clip_id
    screen = session.rate(root, code, screen.rater_id, screen.clip_id, [3, 4])  # list form, scale order
    assert screen.position == 2 and screen.clip_id != first
    with pytest.raises(AlreadyRatedError):
        session.rate(root, code, screen.rater_id, first, scores)
    resumed = session.join(root, code, screen.rater_id)  # page reload / BrowserState
    assert (resumed.rater_id, resumed.clip_id, resumed.position) == (screen.rater_id, screen.clip_id, 2)
    assert other.rater_id != screen.rater_id
    session_order = RatingStore(folder / catalog.DB).rater(screen.rater_id)["clip_order"]
    assert sorted(session_order) == sorted(c["id"] for c in manifest["clips"])
    RatingStore(folder / catalog.DB).set_open(False)
    try:
        with pytest.raises(ListeningError, match="closed"):
            session.join(root, code)
        with pytest.raises(ListeningError, match="closed"):
            session.rate(root, code, resumed.rater_id, resumed.clip_id, scores)
    finally:
        RatingStore(folder / catalog.DB).set_open(True)


def test_min_listening_time_is_enforced(tmp_path):
    root, folder, manifest, _ = build_tiny(tmp_path, min_listen_fraction=1.0, anchor="none", real_dir=None,
                                           gold_noise=0, models=["alpha-model"], clips_per_system=1, clip_seconds=0.3)
    screen = session.join(root, manifest["code"])
    session.played(root, manifest["code"], screen.rater_id, screen.clip_id)
    with pytest.raises(NotPlayedError, match="whole clip"):
        session.rate(root, manifest["code"], screen.rater_id, screen.clip_id, [3, 3])
    time.sleep(0.35)
    assert session.rate(root, manifest["code"], screen.rater_id, screen.clip_id, [3, 3]).finished
    row = RatingStore(folder / catalog.DB).ratings()[0]
    assert row["decision_s"] >= 0.3 and 0 < row["listen_s"] <= 0.3 + 1e-9 and row["n_plays"] == 1


def test_teacher_access_rules():
    from playground.listening.config import ListenSettings

    with_pw = ListenSettings(password="s3cret")
    session.teacher_allowed(with_pw, "s3cret", "10.0.0.9")
    with pytest.raises(ListeningError, match="Wrong"):
        session.teacher_allowed(with_pw, "guess", "127.0.0.1")
    session.teacher_allowed(ListenSettings(), None, "127.0.0.1")  # no password: this computer only
    with pytest.raises(ListeningError, match="computer running the app"):
        session.teacher_allowed(ListenSettings(), None, "192.168.1.20")
    with pytest.raises(ListeningError, match="teacher-password"):
        session.teacher_allowed(ListenSettings(public=True), None, "127.0.0.1")  # public: no default


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_create_and_summarize(tmp_path, capsys):
    ck = make_checkpoints(tmp_path / "ck", names=("solo",))
    root = tmp_path / "root"
    assert cli(["--root", str(root), "create", "--title", "CLI", "--kind", "music", "--model", "solo",
                "--checkpoints", str(ck), "--anchor", "noise", "--clips", "2", "--seconds", "0.05"]) == 0
    made = json.loads(capsys.readouterr().out)
    folder = root / made["test_dir"].split("/")[-1]
    code = made["code"]
    from listening_helpers import rate_everything

    rate_everything(root, code, lambda c, s: 4 if s == "fidelity" else 2, wait=0.05)
    rate_everything(root, code, lambda c, s: 5 if s == "fidelity" else 3, wait=0.05)
    assert cli(["summarize", str(folder), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| Model | Fidelity | Musicality |\n|---|---|---|\n")
    assert "| solo | 4.50 ± " in md and "| Anchor: white noise | 4.50 ± " in md
    out = tmp_path / "summary.csv"
    raw = tmp_path / "raw.csv"
    assert cli(["summarize", str(folder), "--csv", str(out), "--ratings-csv", str(raw)]) == 0
    text = capsys.readouterr().out
    assert "Pairwise" not in text and "p (Holm)" in text and "2 raters joined, 2 finished" in text
    assert len(out.read_text().splitlines()) == 1 + 2 * 2 and len(raw.read_text().splitlines()) == 1 + 2 * 4 * 2
    assert cli(["--root", str(root), "list"]) == 0
    assert code in capsys.readouterr().out
    assert cli(["close", str(folder)]) == 0 and not RatingStore(folder / catalog.DB).is_open()
    assert cli(["summarize", str(tmp_path / "missing")]) == 2


def test_30_concurrent_raters_through_the_session_api(tmp_path):
    """The whole rater path (join, played, rate: manifest lookups + SQLite) from 30 threads on a built test
    of 20 clips with one scale -> exactly 600 ratings, every rater finished."""
    from listening_helpers import rate_everything

    root, folder, manifest, _ = build_tiny(
        tmp_path, kind="custom", scales=[Scale("overall", "Overall", "How good is it?")], clips_per_system=5,
        clip_seconds=0.05, gold_noise=0)
    assert len(manifest["clips"]) == 20
    errors, start = [], threading.Barrier(30)

    def rater(r: int):
        try:
            start.wait()
            rate_everything(root, manifest["code"], lambda c, s: 1 + (r + len(c)) % 5)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    wall = run_concurrently(rater, list(range(30)))
    print(f"30 raters x 20 clips through session.join/played/rate: {wall:.2f} s wall, {600 / wall:.0f} ratings/s")
    assert errors == []
    store = RatingStore(folder / catalog.DB)
    assert store.count() == 600
    assert [r["n_rated"] for r in store.raters()] == [20] * 30
