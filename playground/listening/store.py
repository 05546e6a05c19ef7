"""Ratings of one listening test in SQLite (one file per test folder, WAL mode).

Tables:
    meta     (key PRIMARY KEY, value)                     e.g. open = "1" / "0"
    raters   (rater_id PRIMARY KEY, created, clip_order JSON list of clip ids, user_agent, host_hash)
    plays    (rater_id, clip_id, event play|pause|stop, t)  the audio player's events, server time
    ratings  (rater_id, clip_id, scale, score 1-5, created, first_play, decision_s, listen_s, n_plays,
              UNIQUE (rater_id, clip_id, scale))        a clip is rated at most once per scale, by SQL

Join limits: :meth:`RatingStore.add_rater` counts raters (the test's maximum) and raters added from the
same client address in the last hour (a per-address maximum) in the transaction that inserts, so
concurrent joins cannot overshoot. The address is kept only as host_hash, an HMAC-SHA256 keyed with a
random per-file salt (meta "host_salt"): equal addresses match, the address itself is not stored. Files
made before host_hash existed get the column on their first join.

Concurrency: each thread keeps its own connection per file (never shared between threads), with
``busy_timeout`` set, and every call runs one short transaction; writes start with ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade, and WAL lets readers proceed while one writer commits.
``synchronous=FULL`` makes a committed rating survive a power cut, not only an app crash. Connections stay
open for the thread's lifetime: closing the last connection of a WAL file checkpoints it, which would cost
an extra fsync per rating (measured here: 69 -> 5 ms per play + rate).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from playground.listening.config import ListeningError, echo

BUSY_TIMEOUT_MS = 30_000
HOST_WINDOW_S = 3600.0  # the per-address join limit counts joins in this window
_LOCAL = threading.local()  # per-thread {database path: connection}
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    rater_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    clip_order TEXT NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    host_hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS plays (
    id INTEGER PRIMARY KEY,
    rater_id TEXT NOT NULL REFERENCES raters(rater_id),
    clip_id TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('play', 'pause', 'stop')),
    t REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS plays_by_clip ON plays (rater_id, clip_id, t);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY,
    rater_id TEXT NOT NULL REFERENCES raters(rater_id),
    clip_id TEXT NOT NULL,
    scale TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    created REAL NOT NULL,
    first_play REAL NOT NULL,
    decision_s REAL NOT NULL,
    listen_s REAL NOT NULL,
    n_plays INTEGER NOT NULL,
    UNIQUE (rater_id, clip_id, scale)
);
"""
RATING_COLUMNS = ("rater_id", "clip_id", "scale", "score", "created", "first_play", "decision_s", "listen_s",
                  "n_plays")


class NotPlayedError(ListeningError):
    """A rating for a clip the rater has not played (long enough)."""


class AlreadyRatedError(ListeningError):
    """A second rating of the same clip by the same rater (the UNIQUE constraint fired)."""


class JoinLimitError(ListeningError):
    """A new rater over the test's rater limit or its per-address join limit."""


class RatingStore:
    """The SQLite file of one test. Cheap to create; holds no connection between calls."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the file (autocommit; callers BEGIN explicitly)."""
        yield _thread_connection(self.path)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def init(self) -> RatingStore:
        """Create the file and tables (idempotent) and switch the file to WAL mode (persistent)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ListeningError(f"SQLite refused WAL mode for {self.path} (got {mode}).")
            conn.executescript(SCHEMA)
            _add_host_column(conn)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('open', '1')")
        return self

    # ------------------------------------------------------------------------------------------- meta
    def is_open(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'open'").fetchone()
        return row is not None and row[0] == "1"

    def set_open(self, is_open: bool) -> None:
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('open', ?)", ("1" if is_open else "0",))

    # ----------------------------------------------------------------------------------------- raters
    def add_rater(self, rater_id: str, clip_order: Sequence[str], user_agent: str = "", now: float | None = None,
                  *, host: str | None = None, max_raters: int = 0, per_host: int = 0) -> None:
        """Register a rater with their clip order. Re-adding an existing rater is an error.

        Refused (JoinLimitError) when the test has max_raters raters already (0: no limit), or when
        per_host raters joined from the same client address `host` in the last HOST_WINDOW_S seconds
        (0 or host None: no per-address limit)."""
        t = time.time() if now is None else now
        try:
            with self.write() as conn:
                _add_host_column(conn)
                host_hash = "" if host is None else _host_hash(conn, host)
                if max_raters and conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] >= max_raters:
                    raise JoinLimitError(f"This test is full: it takes {max_raters} raters and all places are "
                                         "taken. Ask your teacher.")
                if per_host and host is not None and conn.execute(
                        "SELECT COUNT(*) FROM raters WHERE host_hash = ? AND created > ?",
                        (host_hash, t - HOST_WINDOW_S)).fetchone()[0] >= per_host:
                    raise JoinLimitError(f"{per_host} people have joined this test from your network address in "
                                         "the last hour, the most allowed. If you joined before, continue in the "
                                         "same browser; otherwise ask your teacher.")
                conn.execute("INSERT INTO raters (rater_id, created, clip_order, user_agent, host_hash) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (rater_id, t, json.dumps(list(clip_order)), user_agent[:300], host_hash))
        except sqlite3.IntegrityError as exc:
            raise ListeningError("This rater id exists already.") from exc

    def rater(self, rater_id: str) -> dict | None:
        """{rater_id, created, clip_order (list of clip ids), user_agent, rated (set of rated clip ids)}, or None.
        A screen's scales are stored in one transaction, so a clip in `rated` has all its scales."""
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM raters WHERE rater_id = ?", (rater_id,)).fetchone()
            if row is None:
                return None
            rated = {r[0] for r in conn.execute("SELECT DISTINCT clip_id FROM ratings WHERE rater_id = ?",
                                                (rater_id,))}
        return {"rater_id": row["rater_id"], "created": row["created"], "clip_order": json.loads(row["clip_order"]),
                "user_agent": row["user_agent"], "rated": rated}

    def raters(self) -> list[dict]:
        """Every rater with the number of clips they rated."""
        with self.connect() as conn:
            rows = conn.execute("SELECT r.rater_id, r.created, r.clip_order, "
                                "(SELECT COUNT(DISTINCT clip_id) FROM ratings g WHERE g.rater_id = r.rater_id) "
                                "AS n_rated FROM raters r ORDER BY r.created").fetchall()
        return [{"rater_id": r[0], "created": r[1], "n_clips": len(json.loads(r[2])), "n_rated": r[3]} for r in rows]

    # ------------------------------------------------------------------------------------------ plays
    def record_play(self, rater_id: str, clip_id: str, event: str = "play", now: float | None = None) -> float:
        """Record a player event (play/pause/stop) at server time; returns that time."""
        if event not in ("play", "pause", "stop"):
            raise ListeningError(f"Unknown player event {echo(event)}.")
        t = time.time() if now is None else now
        with self.write() as conn:
            conn.execute("INSERT INTO plays (rater_id, clip_id, event, t) VALUES (?, ?, ?, ?)",
                         (rater_id, clip_id, event, t))
        return t

    # ---------------------------------------------------------------------------------------- ratings
    def add_ratings(self, rater_id: str, clip_id: str, scores: dict[str, int], *, clip_seconds: float = 0.0,
                    min_listen_s: float = 0.0, now: float | None = None) -> dict:
        """Store one screen's ratings (one row per scale) in one transaction.

        Refused (NotPlayedError) unless the clip was played and at least min_listen_s passed since its first
        play; AlreadyRatedError when any scale of this clip was rated before by this rater. Listening time:
        listen_s sums each play -> next pause/stop interval (an interval still open at submission counts up
        to submission, at most clip_seconds); decision_s is first play -> submission."""
        if not scores:
            raise ListeningError("No scores given.")
        for scale, score in scores.items():
            if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
                raise ListeningError(f"Score for {echo(scale)} must be a whole number from 1 to 5, got {echo(score)}.")
        t = time.time() if now is None else now
        try:
            with self.write() as conn:
                events = conn.execute("SELECT event, t FROM plays WHERE rater_id = ? AND clip_id = ? ORDER BY t, id",
                                      (rater_id, clip_id)).fetchall()
                plays = [e["t"] for e in events if e["event"] == "play"]
                if not plays:
                    raise NotPlayedError("Play the clip before rating it.")
                decision = t - plays[0]
                if decision < min_listen_s:
                    raise NotPlayedError(f"Listen to the whole clip first ({min_listen_s:.1f} s), then rate it.")
                listen = listening_time(events, t, clip_seconds)
                conn.executemany(
                    "INSERT INTO ratings (rater_id, clip_id, scale, score, created, first_play, decision_s, "
                    "listen_s, n_plays) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(rater_id, clip_id, scale, int(score), t, plays[0], decision, listen, len(plays))
                     for scale, score in scores.items()])
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise AlreadyRatedError("You have rated this clip already.") from exc
            raise
        return {"decision_s": decision, "listen_s": listen, "n_plays": len(plays)}

    def ratings(self) -> list[dict]:
        """Every rating row as a dict (RATING_COLUMNS), in insertion order."""
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {', '.join(RATING_COLUMNS)} FROM ratings ORDER BY id").fetchall()
        return [dict(r) for r in rows]

    def count(self) -> int:
        with self.connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]


def _thread_connection(path: Path) -> sqlite3.Connection:
    """The calling thread's connection to path, opened on first use."""
    conns = getattr(_LOCAL, "conns", None)
    if conns is None:
        conns = _LOCAL.conns = {}
    key = str(path)
    conn = conns.get(key)
    if conn is None:
        conn = sqlite3.connect(key, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.row_factory = sqlite3.Row
        conns[key] = conn
    return conn


def _add_host_column(conn: sqlite3.Connection) -> None:
    """Give raters its host_hash column and index when the file predates them (idempotent)."""
    if "host_hash" not in {row[1] for row in conn.execute("PRAGMA table_info(raters)")}:
        conn.execute("ALTER TABLE raters ADD COLUMN host_hash TEXT NOT NULL DEFAULT ''")
    conn.execute("CREATE INDEX IF NOT EXISTS raters_by_host ON raters (host_hash, created)")


def _host_hash(conn: sqlite3.Connection, host: str) -> str:
    """HMAC-SHA256 of a client address keyed with this file's salt (created on first use): 32 hex digits.
    Runs inside a write transaction."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('host_salt', ?)", (secrets.token_hex(16),))
    salt = conn.execute("SELECT value FROM meta WHERE key = 'host_salt'").fetchone()[0]
    return hmac.new(salt.encode(), str(host).encode(), hashlib.sha256).hexdigest()[:32]


def close_thread_connections() -> None:
    """Close the calling thread's connections (e.g. before deleting a test folder in this thread)."""
    for conn in getattr(_LOCAL, "conns", {}).values():
        conn.close()
    _LOCAL.conns = {}


def listening_time(events: Sequence, submitted: float, clip_seconds: float) -> float:
    """Seconds of playback from (event, t) rows sorted by t: each play runs until the next pause/stop (or
    the submission); the total is capped at clip_seconds (when > 0): how much of the clip was heard, which
    a late stop event or a replay cannot push past the clip's length."""
    total, started = 0.0, None
    for event, t in events:
        if event == "play":
            if started is not None:  # play while playing (seek / replay): close the previous interval
                total += t - started
            started = t
        elif started is not None:
            total += t - started
            started = None
    if started is not None:
        total += submitted - started
    total = max(0.0, total)
    return min(total, clip_seconds) if clip_seconds > 0 else total
