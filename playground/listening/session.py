"""The rater's side of a test, over plain values: join with a code, get an anonymous id and a blind random
clip order, play, rate, resume. Nothing returned here names a system or a source file: clips are known by
their opaque ids only, and the manifest never leaves the server.

    screen = join(root, "K7M3QX")                     # new rater: Screen(position=1, total=24, clip_id=...)
    played(root, "K7M3QX", screen.rater_id, screen.clip_id)
    screen = rate(root, "K7M3QX", screen.rater_id, screen.clip_id, {"quality": 4, "intelligibility": 5})

Order: a uniform random permutation of all clips per rater, seeded by (test id, rater id), so every clip
appears once per rater, positions are uniform over raters, and a resumed session sees the same order.
"""
from __future__ import annotations

import hashlib
import hmac
import numbers
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from playground.listening import catalog
from playground.listening.config import Limits, ListeningError, ListenSettings, echo
from playground.listening.store import RatingStore

LOOPBACK = ("127.0.0.1", "::1", "localhost")
WRONG_PASSWORD_DELAY_S = 0.3


@dataclass
class Screen:
    """What the rater page shows next."""

    code: str
    title: str
    instructions: str
    rater_id: str
    position: int  # 1-based index of the current clip (total + 1 when finished)
    total: int
    clip_id: str | None  # opaque id of the current clip (None when finished)
    audio: tuple[int, np.ndarray] | None = field(default=None, repr=False)  # (sample_rate, int16 (n,))
    scales: list[dict] = field(default_factory=list)  # {id, label, question, choices [(label, score)]}
    finished: bool = False
    message: str = ""

    def public(self) -> dict:
        """JSON view for API clients (no audio samples)."""
        return {"code": self.code, "title": self.title, "rater_id": self.rater_id, "position": self.position,
                "total": self.total, "clip_id": self.clip_id, "finished": self.finished, "message": self.message,
                "scales": [{k: v for k, v in s.items()} for s in self.scales]}


def new_rater_id() -> str:
    """An unguessable anonymous rater id (16 url-safe characters)."""
    return secrets.token_urlsafe(12)


def clip_order(test_id: str, rater_id: str, clip_ids: list[str]) -> list[str]:
    """The rater's clip order: a uniform random permutation seeded by (test id, rater id)."""
    seed = int.from_bytes(hashlib.sha256(f"{test_id}:{rater_id}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return [clip_ids[i] for i in rng.permutation(len(clip_ids))]


def _open(root: Path, code: str) -> tuple[Path, dict, RatingStore]:
    folder = catalog.find_by_code(root, code)
    return folder, catalog.read_manifest(folder), RatingStore(folder / catalog.DB)


def _scales(manifest: dict) -> list[dict]:
    return [{"id": s["id"], "label": s["label"], "question": s["question"],
             "choices": [(f"{i + 1} · {a}", i + 1) for i, a in enumerate(s["anchors"])]}
            for s in manifest["scales"]]


def _screen(folder: Path, manifest: dict, store: RatingStore, rater_id: str, message: str = "") -> Screen:
    rater = store.rater(rater_id)
    if rater is None:
        raise ListeningError("Unknown rater: join the test again with its code.")
    order, rated = rater["clip_order"], rater["rated"]
    remaining = [c for c in order if c not in rated]
    base = dict(code=manifest["code"], title=manifest["title"], instructions=manifest.get("instructions", ""),
                rater_id=rater_id, total=len(order), scales=_scales(manifest), message=message)
    if not remaining:
        return Screen(position=len(order) + 1, clip_id=None, finished=True, **base)
    clip_id = remaining[0]
    return Screen(position=len(order) - len(remaining) + 1, clip_id=clip_id,
                  audio=clip_audio(folder, manifest, clip_id), **base)


def clip_audio(folder: Path, manifest: dict, clip_id: str) -> tuple[int, np.ndarray]:
    """(sample_rate, int16 samples) of one clip of this test."""
    import soundfile as sf

    clip = next((c for c in manifest["clips"] if c["id"] == clip_id), None)
    if clip is None:
        raise ListeningError("This clip is not part of the test.")
    audio, sr = sf.read(str(folder / clip["file"]), dtype="int16")
    return int(sr), audio


def join(root: Path, code: str, rater_id: str | None = None, user_agent: str = "",
         client_host: str | None = None) -> Screen:
    """Join the test with this code: resume as rater_id when it belongs to this test, else start as a new
    anonymous rater with a fresh random clip order. A new rater is refused (JoinLimitError) when the test
    has its manifest's max_raters already, or when joins_per_host raters joined from client_host in the
    last hour; client_host None (in-process callers: CLI, tests) skips the per-address limit."""
    folder, manifest, store = _open(root, code)
    if rater_id and store.rater(rater_id) is not None:
        return _screen(folder, manifest, store, rater_id, "Welcome back: continuing where you left off.")
    if not store.is_open():
        raise ListeningError("This test is closed; ask your teacher.")
    rater_id = new_rater_id()
    store.add_rater(rater_id, clip_order(manifest["test_id"], rater_id, [c["id"] for c in manifest["clips"]]),
                    user_agent, host=client_host, max_raters=int(manifest.get("max_raters", Limits().max_raters)),
                    per_host=int(manifest.get("joins_per_host", Limits().joins_per_host)))
    return _screen(folder, manifest, store, rater_id)


def current(root: Path, code: str, rater_id: str) -> Screen:
    """The rater's next screen."""
    folder, manifest, store = _open(root, code)
    return _screen(folder, manifest, store, rater_id)


def _check_clip(store: RatingStore, rater_id: str, clip_id: str) -> dict:
    rater = store.rater(rater_id)
    if rater is None:
        raise ListeningError("Unknown rater: join the test again with its code.")
    if clip_id not in rater["clip_order"]:
        raise ListeningError("This clip is not part of your test.")
    return rater


def played(root: Path, code: str, rater_id: str, clip_id: str, event: str = "play") -> float:
    """Record a player event (play / pause / stop) for the rater's clip; returns the server time."""
    _, _, store = _open(root, code)
    _check_clip(store, rater_id, clip_id)
    return store.record_play(rater_id, clip_id, event)


def rate(root: Path, code: str, rater_id: str, clip_id: str, scores: dict | list) -> Screen:
    """Store the scores of one clip, {scale id: 1..5} or a list in the test's scale order (every scale is
    required), and return the next screen. Refused when the clip was not played long enough, or was rated
    before."""
    folder, manifest, store = _open(root, code)
    if not store.is_open():
        raise ListeningError("This test is closed; your earlier ratings are saved.")
    _check_clip(store, rater_id, clip_id)
    if not isinstance(scores, dict):
        scores = {s["id"]: v for s, v in zip(manifest["scales"], scores, strict=False)}
    missing = [s["label"] for s in manifest["scales"] if scores.get(s["id"]) in (None, "")]
    if missing:
        raise ListeningError(f"Rate every question first (missing: {', '.join(missing)}).")
    clean = {s["id"]: _score(s["label"], scores[s["id"]]) for s in manifest["scales"]}
    clip = next(c for c in manifest["clips"] if c["id"] == clip_id)
    store.add_ratings(rater_id, clip_id, clean, clip_seconds=clip["seconds"],
                      min_listen_s=manifest.get("min_listen_fraction", 0.8) * clip["seconds"])
    return _screen(folder, manifest, store, rater_id)


def _score(label: str, value) -> int:
    """A score as int 1..5; bools (True is not 1 here), floats, strings and anything else are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= 5:
        raise ListeningError(f"{label}: the score must be a whole number from 1 to 5, got {echo(value)}.")
    return int(value)


def teacher_allowed(settings: ListenSettings, password: str | None, client_host: str | None) -> None:
    """Raise ListeningError unless this request may use the teacher tools: the right password when one is
    set; without one, only requests from this computer, and never in public mode."""
    if settings.password:
        if not hmac.compare_digest(str(password or "").encode(), settings.password.encode()):
            time.sleep(WRONG_PASSWORD_DELAY_S)  # slows guessing down
            raise ListeningError("Wrong teacher password.")
        return
    if settings.public:
        raise ListeningError("Teacher tools are off: start the app with SASHIMI_TEACHER_PASSWORD set (or "
                             "--teacher-password-file) to build tests and see results.")
    if client_host not in LOOPBACK:
        raise ListeningError("No teacher password is set, so the teacher tools only work on the computer "
                             "running the app (open it at http://127.0.0.1:<port>). Set one with "
                             "SASHIMI_TEACHER_PASSWORD to use them from elsewhere.")
