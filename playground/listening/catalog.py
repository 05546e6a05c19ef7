"""Listening tests on disk: one folder per test under the listening root (env SASHIMI_LISTENING_DIR).

    <root>/<test_id>/manifest.json   the test: spec, scales, systems, clips (clip id -> system), join code.
                                     Private to the teacher: raters never see it. Written once, atomically,
                                     when the build finishes, so its presence means "ready".
    <root>/<test_id>/status.json     build progress {state: building|ready|failed|cancelled, progress, message}
    <root>/<test_id>/clips/<id>.wav  the clips under opaque random ids (16-bit PCM, all the same length)
    <root>/<test_id>/ratings.sqlite  raters, play events and ratings (see store.py; WAL mode)
    <root>/<test_id>/exports/        CSV files written for the teacher
    <root>/.browser-secret           key that encrypts rater ids kept in raters' browsers (resume after restart)

Join codes are 6 characters from an alphabet without look-alikes (no 0/O, 1/I/L), unique within the root.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

from playground.listening.config import ECHO_CHARS, ListeningError, echo
from sashimi_core.checkpoint import atomic_write_json

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
TEST_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[a-f0-9]{6}$")
MANIFEST, STATUS, DB, CLIPS, EXPORTS = "manifest.json", "status.json", "ratings.sqlite", "clips", "exports"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, obj) -> None:
    """JSON (indent 2, sorted keys, final newline), written atomically; creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def new_test_id() -> str:
    """Folder name of a new test: creation time + random hex (reveals nothing about its systems)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def normalize_code(code: str | None) -> str:
    """The code as typed, upper-cased, with spaces and dashes removed ("k7m 3qx" -> "K7M3QX")."""
    return re.sub(r"[\s-]", "", str(code or "")).upper()


def new_code(root: Path) -> str:
    """A join code not used by any test under root."""
    used = {t["code"] for t in list_tests(root)}
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if code not in used:
            return code


def test_dir(root: Path, test_id: str) -> Path:
    """The folder of a test id; refuses anything that is not a test id (no path tricks)."""
    if not TEST_ID_RE.match(str(test_id or "")):
        raise ListeningError(f"{echo(test_id)} is not a listening test id.")
    return Path(root) / test_id


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ListeningError(f"The test in {folder} is not ready (no {MANIFEST}); is it still building?")
    return json.loads(path.read_text())


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json_atomic(Path(folder) / MANIFEST, manifest)


def read_status(folder: Path) -> dict:
    """Build status; a folder with a manifest but no status counts as ready."""
    path = Path(folder) / STATUS
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        state = "ready" if (Path(folder) / MANIFEST).is_file() else "unknown"
        return {"state": state, "progress": 1.0 if state == "ready" else 0.0, "message": ""}


def write_status(folder: Path, state: str, progress: float, message: str, **extra) -> None:
    write_json_atomic(Path(folder) / STATUS, {"state": state, "progress": round(float(progress), 4),
                                              "message": message, "updated": time.time(), **extra})


def list_tests(root: Path) -> list[dict]:
    """Every test folder under root, newest first: {id, dir, title, code, state, progress, message, n_clips}."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and TEST_ID_RE.match(p.name)), reverse=True):
        status = read_status(folder)
        try:
            manifest = read_manifest(folder)
        except (ListeningError, json.JSONDecodeError, OSError):
            manifest = {}
        out.append({"id": folder.name, "dir": str(folder), "title": manifest.get("title", status.get("title", "")),
                    "code": manifest.get("code", status.get("code", "")), "state": status.get("state", "unknown"),
                    "progress": status.get("progress", 0.0), "message": status.get("message", ""),
                    "n_clips": len(manifest.get("clips", []))})
    return out


def find_by_code(root: Path, code: str) -> Path:
    """The ready test with this join code; ListeningError when there is none."""
    code = normalize_code(code)
    if not code:
        raise ListeningError("Enter the join code your teacher gave you.")
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        shown = "That" if len(code) > ECHO_CHARS else echo(code)  # a long code is not quoted back at all
        raise ListeningError(f"{shown} is not a join code: codes are {CODE_LENGTH} letters and digits.")
    for test in list_tests(root):
        if test["code"] == code and test["state"] == "ready":
            return Path(test["dir"])
    raise ListeningError(f"No open test has the code {code}. Check it with your teacher.")


def delete_test(root: Path, test_id: str) -> None:
    folder = test_dir(root, test_id)
    if not folder.is_dir():
        raise ListeningError(f"There is no test {test_id}.")
    from playground.listening.store import close_thread_connections

    close_thread_connections()
    shutil.rmtree(folder)


def browser_secret(root: Path) -> str:
    """A per-root random key, created once, for gr.BrowserState (so raters can resume after a restart)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".browser-secret"
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".secret.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic create-if-absent: two processes agree on one secret
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()


def data_folders(data_dir: Path) -> list[str]:
    """Sub-folders of the data folder (candidate real-data sets), as paths."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    return [str(p) for p in sorted(data_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def available_models(model_roots=None) -> list[dict]:
    """Checkpoints a test can use ({name, path} from sashimi_core.list_checkpoints), names made unique."""
    from sashimi_core import list_checkpoints  # imports torch: only when asked

    out, seen = [], set()
    for entry in list_checkpoints(model_roots):
        name = entry["name"] if entry["name"] not in seen else f"runs/{entry['name']}"
        seen.add(name)
        out.append({"name": name, "path": entry["path"],
                    "sample_rate": int(entry["config"].get("sample_rate", 16000))})
    return out


def lan_address() -> str | None:
    """This computer's address on the local network (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def join_links(code: str, host: str | None, scheme: str = "http", path: str = "rate") -> list[str]:
    """Rater links for a code: the address the teacher's browser used (host header) and, when that is
    this computer only, the same port on the local network address."""
    host = host or "127.0.0.1:7860"
    links = [f"{scheme}://{host}/{path}?code={code}"]
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    if name in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0"):
        lan = lan_address()
        if lan:
            links.append(f"{scheme}://{lan}{':' + port if port else ''}/{path}?code={code}")
    return links
