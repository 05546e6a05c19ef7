"""The app's child processes (training runs, data set builds): start them, find them, stop them.

Nothing here trusts a file for a process id or a command. A job is identified by its kind and its output
folder, ``("train", <run folder>)`` or ``("data", <data set folder>)``, and is running iff

- this app started it (the ``Popen`` is kept in memory) and it has not exited, or
- a live process of this user runs exactly ``python -m sashimi_core.train ... --out <run folder>`` (or
  ``python -m sashimi_core.data build <name> ... --out <data set folder>``), read from ``/proc``: how an
  app restarted while a run goes on finds it again.

So a stop signal only ever reaches a trainer or builder of that very folder, and a ``job.json`` written by
someone else can neither name a process to kill nor a command to run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

KIND_MODULES = {"train": ("sashimi_core.train",), "data": ("sashimi_core.data", "build")}
_SCAN_TTL_S = 1.0

_lock = threading.Lock()
_children: dict[tuple[str, str], subprocess.Popen] = {}
_scan_cache: tuple[float, dict[tuple[str, str], int]] = (0.0, {})


def proc_cmdline(pid: int) -> list[str] | None:
    """Command line of a live, non-zombie process of this user (Linux /proc), or None."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def job_key(command: list[str]) -> tuple[str, str] | None:
    """(kind, resolved --out folder) of a trainer / builder command line, None for any other command."""
    for kind, module in KIND_MODULES.items():
        if command[1:2 + len(module)] == ["-m", *module] and "--out" in command[:-1]:
            out = command[command.index("--out") + 1]
            return (kind, out) if os.path.isabs(out) else None
    return None


def _scan() -> dict[tuple[str, str], int]:
    """{job key: pid} of every trainer / builder process of this user, cached for _SCAN_TTL_S."""
    global _scan_cache
    with _lock:
        when, found = _scan_cache
        if time.monotonic() - when < _SCAN_TTL_S:
            return found
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (cmd := proc_cmdline(int(entry.name))) and (key := job_key(cmd)):
            found[key] = int(entry.name)
    with _lock:
        _scan_cache = (time.monotonic(), found)
    return found


def _key(kind: str, folder) -> tuple[str, str]:
    return kind, str(Path(folder).resolve())


def running_pid(kind: str, folder) -> int | None:
    """Pid of the live trainer / builder of folder, or None."""
    key = _key(kind, folder)
    with _lock:
        child = _children.get(key)
    if child is not None and child.poll() is None:
        return child.pid
    return _scan().get(key)


def spawn(command: list[str], log_path: Path, env: dict, cwd: str) -> subprocess.Popen:
    """Start a trainer / builder command in its own session (it outlives the app), output to log_path.
    The command must be one job_key recognises, with an absolute --out folder."""
    key = job_key(command)
    if key is None:
        raise ValueError(f"not a trainer or builder command: {command[:4]}")
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n$ {' '.join(command)}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    with _lock:
        _children[_key(*key)] = proc
        global _scan_cache
        _scan_cache = (0.0, {})
    # Reap the child when it exits (no zombie); poll() stays valid after wait().
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def terminate(kind: str, folder) -> bool:
    """SIGTERM the live trainer / builder of folder (found as running_pid does). False if none runs."""
    pid = running_pid(kind, folder)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
