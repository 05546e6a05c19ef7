"""Listening-test storage and flow with real files: SQLite schema and rules (played first, UNIQUE ratings),
30 concurrent raters losing nothing, join limits, the builder's clips and manifest (real generation with a
tiny model; every source leaves with the same level and sample statistics), the rater session (blind order,
resume, closed tests, score and code checks) and the CLI."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from listening_helpers import MODEL_NAMES, REAL_PREFIX, build_tiny, make_checkpoints, make_real_folder, run_concurrently

from playground.listening import builder, catalog, session
from playground.listening.__main__ import main as cli
from playground.listening.builder import BuildRegistry, Clip, build_test, write_test
from playground.listening.config import ListeningError, Scale, TestSpec
from playground.listening.store import (
    AlreadyRatedError,
    JoinLimitError,
    NotPlayedError,
    RatingStore,
    listening_time,
)


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
    assert listening_time([("play", 0.0), ("stop", 3.5)], 4.0, 2.0) == 2.0  # a late stop event: capped
    assert listening_time([("play", 0.0), ("stop", 2.0), ("play", 2.5), ("stop", 4.5)], 5.0, 2.0) == 2.0  # replay
    assert listening_time([("play", 0.0), ("stop", 3.5)], 4.0, 0.0) == 3.5  # no clip length: uncapped


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


def test_join_limits_per_test_and_per_address(tmp_path):
    """At most max_raters raters, at most per_host new raters per address and hour (an hour later the
    address may add more); the address is stored only as a salted hash."""
    store = RatingStore(tmp_path / "r.sqlite").init()
    limits = dict(max_raters=4, per_host=2)
    store.add_rater("a1", ["c"], host="10.0.0.1", now=1000.0, **limits)
    store.add_rater("a2", ["c"], host="10.0.0.1", now=1001.0, **limits)
    with pytest.raises(JoinLimitError, match="from your network address in the last hour"):
        store.add_rater("a3", ["c"], host="10.0.0.1", now=1002.0, **limits)
    store.add_rater("b1", ["c"], host="10.0.0.2", now=1003.0, **limits)
    store.add_rater("a3", ["c"], host="10.0.0.1", now=1001.0 + 3601.0, **limits)  # the window has passed
    with pytest.raises(JoinLimitError, match="test is full: it takes 4 raters"):
        store.add_rater("c1", ["c"], host="10.0.0.3", now=5000.0, **limits)
    assert [r["rater_id"] for r in store.raters()] == ["a1", "a2", "b1", "a3"]
    with sqlite3.connect(store.path) as conn:
        hashes = dict(conn.execute("SELECT rater_id, host_hash FROM raters"))
    assert hashes["a1"] == hashes["a2"] == hashes["a3"] != hashes["b1"] and len(hashes["a1"]) == 32
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("r.sqlite*"))  # the file and its WAL
    assert b"10.0.0.1" not in raw and b"10.0.0.2" not in raw


def test_join_limit_holds_under_concurrent_joins(tmp_path):
    """12 threads join from one address at once with a limit of 3: exactly 3 get in."""
    store = RatingStore(tmp_path / "r.sqlite").init()
    joined, refused = [], []

    def join(i: int):
        try:
            RatingStore(store.path).add_rater(f"r{i}", ["c"], host="192.168.1.7", per_host=3)
            joined.append(i)
        except JoinLimitError:
            refused.append(i)

    run_concurrently(join, list(range(12)))
    assert (len(joined), len(refused)) == (3, 9) and len(store.raters()) == 3


def test_store_made_before_host_hash_accepts_joins(tmp_path):
    """A ratings file from before the host_hash column gets it on the first join."""
    from playground.listening.store import SCHEMA

    path = tmp_path / "old.sqlite"
    old_schema = SCHEMA.replace(",\n    host_hash TEXT NOT NULL DEFAULT ''", "")
    assert "host_hash" not in old_schema
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema + "INSERT INTO raters VALUES ('old', 1.0, '[\"c\"]', '');")
    store = RatingStore(path)
    store.add_rater("new", ["c"], host="10.0.0.9", per_host=1)
    with pytest.raises(JoinLimitError):
        store.add_rater("newer", ["c"], host="10.0.0.9", per_host=1)
    assert [r["rater_id"] for r in store.raters()] == ["old", "new"]


# ---------------------------------------------------------------------------------------------- builder
def _three_sources(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Clips as the builder gets them, at their natural levels: model-like (8-bit mu-law tokens near silence
    plus a few loud clicks: ~30 distinct values, a peak 30x the RMS), real-like (a modulated tone through the
    codec, as with quantize_real) and white noise (the anchor)."""
    import torch

    from sashimi_core.ops.quantize import mu_law_decode, mu_law_encode

    tokens = np.clip(128 + np.round(rng.normal(0.0, 3.0, n)), 0, 255).astype(np.int64)
    clicks = rng.choice(n, 20, replace=False)
    tokens[clicks] = 128 + rng.choice([-1, 1], 20) * rng.integers(40, 70, 20)
    t = np.arange(n) / 16000
    tone = (0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.05 * np.sin(2 * np.pi * 1500 * t + 3 * np.sin(2 * np.pi * 5 * t)))
    return {"model": mu_law_decode(torch.from_numpy(tokens)).numpy(),
            "real": mu_law_decode(mu_law_encode(torch.from_numpy(tone))).numpy(),
            "anchor": builder.white_noise(n, rng)}


def _write(tmp_path, clips: list[Clip]) -> tuple[dict, dict[str, np.ndarray]]:
    """write_test into a fresh folder; returns the manifest and {clip id: int16 samples read back}."""
    folder = tmp_path / "test"
    spec = TestSpec(title="Levels", kind="speech", models=["m"], anchor="noise", clips_per_system=2)
    manifest = write_test(folder, spec, clips, [], 16000, "ABCDEF")
    return manifest, {c["id"]: sf.read(str(folder / c["file"]), dtype="int16")[0] for c in manifest["clips"]}


def _dbfs(samples: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean((samples / 32768.0) ** 2)))


def test_every_source_leaves_with_the_same_level_and_value_structure(tmp_path):
    """Model-like, real-like and white-noise clips written by the real write path: every WAV is at -20 dBFS
    RMS (+-0.5 dB; the old peak cap left spiky model clips ~15 dB quieter) and the number of distinct
    sample values, which told the sources apart (~30 / ~200 / ~9000 before), is within a factor 1.5."""
    rng = np.random.default_rng(7)
    clips = [Clip(audio, kind, kind, {}) for _ in range(2) for kind, audio in _three_sources(16000, rng).items()]
    assert len(np.unique(clips[0].audio)) < 50 and len(np.unique(clips[2].audio)) > 5000  # the sources differ
    manifest, written = _write(tmp_path, clips)
    kinds = {c["id"]: c["kind"] for c in manifest["clips"]}
    levels = {i: _dbfs(a) for i, a in written.items()}
    distinct = {i: len(np.unique(a)) for i, a in written.items()}
    print("dBFS / distinct values:", [(kinds[i], round(levels[i], 2), distinct[i]) for i in written])
    target = 20 * np.log10(builder.TARGET_RMS)
    assert all(abs(db - target) < 0.5 for db in levels.values()), levels
    assert max(distinct.values()) <= 1.5 * min(distinct.values()), distinct
    assert all(np.abs(a.astype(np.int32)).max() < 32767 for a in written.values())  # limited, never clipped


def test_prompt_and_continuation_are_levelled_apart(tmp_path):
    """The shared prompt and what follows it each reach -20 dBFS, so the prompt sounds the same before a
    quiet model continuation as before a loud real one."""
    rng = np.random.default_rng(3)
    sources = _three_sources(8000, rng)
    prompt = sources["real"][:4000]
    clips = [Clip(np.concatenate([prompt, sources["model"][:4000]]), "model", "m", {}, prompt=4000),
             Clip(np.concatenate([prompt, 3 * sources["anchor"][:4000]]), "anchor", "a", {}, prompt=4000)]
    manifest, written = _write(tmp_path, clips)
    target = 20 * np.log10(builder.TARGET_RMS)
    for entry in manifest["clips"]:
        audio = written[entry["id"]]
        assert abs(_dbfs(audio[:4000]) - target) < 0.5 and abs(_dbfs(audio[4000:]) - target) < 0.5
        assert "prompt_gain_db" in entry
    quiet, loud = manifest["clips"]
    assert quiet["gain_db"] - loud["gain_db"] > 20 and abs(quiet["prompt_gain_db"] - loud["prompt_gain_db"]) < 0.1


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
    (dict(max_raters=201), "Maximum raters"),
    (dict(joins_per_host=-1), "New raters per address"),
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


def test_join_limits_through_the_session(tmp_path):
    """A test built with max_raters=3 and joins_per_host=2: a third join from one address is refused with a
    message saying why, a returning rater is not a new join, another address gets the last place, then the
    test is full for everyone."""
    root, folder, manifest, _ = build_tiny(tmp_path, models=["alpha-model"], real_dir=None, anchor="none",
                                           gold_noise=0, clips_per_system=1, clip_seconds=0.05, max_raters=3,
                                           joins_per_host=2)
    code = manifest["code"]
    assert (manifest["max_raters"], manifest["joins_per_host"]) == (3, 2)
    first = session.join(root, code, client_host="10.1.1.1")
    session.join(root, code, client_host="10.1.1.1")
    with pytest.raises(JoinLimitError, match="network address"):
        session.join(root, code, client_host="10.1.1.1")
    assert session.join(root, code, first.rater_id, client_host="10.1.1.1").rater_id == first.rater_id
    session.join(root, code, client_host="10.1.1.2")
    for host in ("10.1.1.3", None):
        with pytest.raises(JoinLimitError, match="full"):
            session.join(root, code, client_host=host)
    assert len(RatingStore(folder / catalog.DB).raters()) == 3


def test_scores_must_be_whole_numbers_and_bad_codes_are_not_echoed(built):
    root, folder, manifest, _ = built
    code = manifest["code"]
    screen = session.join(root, code)
    session.played(root, code, screen.rater_id, screen.clip_id)
    for bad in (True, False, 3.0, 2.5, "4", 6, 0):
        with pytest.raises(ListeningError, match="whole number from 1 to 5"):
            session.rate(root, code, screen.rater_id, screen.clip_id, {"quality": bad, "intelligibility": 4})
    assert screen.clip_id not in RatingStore(folder / catalog.DB).rater(screen.rater_id)["rated"]
    session.rate(root, code, screen.rater_id, screen.clip_id, {"quality": np.int64(2), "intelligibility": 4})
    mine = [r for r in RatingStore(folder / catalog.DB).ratings() if r["rater_id"] == screen.rater_id]
    assert sorted((r["scale"], r["score"]) for r in mine) == [("intelligibility", 4), ("quality", 2)]
    with pytest.raises(ListeningError) as err:
        session.join(root, "Q" * 5000)
    assert "QQQ" not in str(err.value) and len(str(err.value)) < 80 and "not a join code" in str(err.value)
    with pytest.raises(ListeningError) as err:
        session.join(root, "AB!" * 10)
    quoted = str(err.value).split(" is not a join code")[0]
    assert quoted.startswith("'AB!AB!") and len(quoted) <= 32


def test_teacher_access_rules():
    from playground.listening.config import ListenSettings

    with_pw = ListenSettings(password="s3cret")
    session.teacher_allowed(with_pw, "s3cret", "10.0.0.9")
    with pytest.raises(ListeningError, match="Wrong"):
        session.teacher_allowed(with_pw, "guess", "127.0.0.1")
    session.teacher_allowed(ListenSettings(), None, "127.0.0.1")  # no password: this computer only
    with pytest.raises(ListeningError, match="computer running the app"):
        session.teacher_allowed(ListenSettings(), None, "192.168.1.20")
    with pytest.raises(ListeningError, match="SASHIMI_TEACHER_PASSWORD"):
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
