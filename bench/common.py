"""Helpers shared by all benchmarks: environment record, timer, isolated peak-memory runs, JSON + markdown.

Peak memory: on CPU each measured case runs in a fresh spawned process (:func:`run_isolated`) that resets
its own RSS high-water mark (``/proc/self/clear_refs``) after setup and reads ``VmHWM`` afterwards, so one
case's allocations never leak into another's number. On CUDA the same child uses
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
GB = 1e9


# ---- environment ------------------------------------------------------------------------------------
def _cpuinfo() -> dict:
    """The first CPU's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_details() -> dict:
    """What `cpu_model` hides on VMs ("AMD EPYC"): the micro-architecture LLVM compiles the engine for (e.g.
    znver3, znver5), family/model, the widest SIMD and the cache sizes of CPU 0. Timings from different
    micro-architectures with the same core count differ 2-3x here, so every result records these."""
    info: dict = {}
    try:
        from llvmlite import binding

        info["cpu_arch"] = binding.get_host_cpu_name()
    except Exception:  # llvmlite comes with numba; without it the engine does not run either
        info["cpu_arch"] = None
    fields = _cpuinfo()
    if "cpu family" in fields:
        info["cpu_family_model"] = f"{fields['cpu family']}/{fields.get('model', '?')}"
    flags = set(fields.get("flags", "").split())
    info["simd"] = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), None)
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            if kind != "Instruction":
                caches[f"L{level}"] = (index / "size").read_text().strip()
        except OSError:
            continue
    info["caches_cpu0"] = caches
    return info


def git_commit() -> str | None:
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)

        out = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def env_record(device: str = "cpu") -> dict:
    """Everything needed to interpret a timing: versions, threads, CPU/GPU model, commit, date."""
    rec = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        **cpu_details(),
        "mem_total_gb": round(mem_info().get("MemTotal", 0) / GB, 1),
        "device": device,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
    }
    if device.startswith("cuda"):
        rec["gpu"] = torch.cuda.get_device_name(torch.device(device))
        rec["cuda"] = torch.version.cuda
    try:
        import triton

        rec["triton"] = triton.__version__
    except Exception:
        rec["triton"] = None
    return rec


def machine_line(env: dict) -> str:
    """One line naming the machine of an `env_record`, printed under every table."""
    if env.get("gpu"):
        return f"{env['gpu']} (CUDA {env.get('cuda')}), commit {env['git_commit']}"
    caches = ", ".join(f"{k} {v}" for k, v in env.get("caches_cpu0", {}).items())
    return (f"{env['cpu_model']} ({env.get('cpu_arch')}, {env.get('simd')}; {caches}), {env['cpu_count']} CPUs, "
            f"{env['torch_threads']} torch threads, torch {env['torch']}, commit {env['git_commit']}")


def cpu_peaks(threads: int) -> dict:
    """What this machine can do at all, measured now: float32 GEMM GFLOP/s (torch, 1024^3, best of 5) at 1 and
    `threads` threads, and memory copy GB/s (read + write) of a 256 MB array and of a 2 MB one (numpy, 1 thread)."""
    import numpy as np

    def best(fn):
        return min(time_fn(fn, repeats=5)["times_s"])

    a = torch.randn(1024, 1024)
    out = {}
    old = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        out[f"sgemm_gflops_{n}t"] = round(2 * 1024**3 / best(lambda: a @ a) / 1e9, 1)
    torch.set_num_threads(old)
    for name, mb in (("dram", 256), ("cache", 2)):
        src = np.ones(mb * 2**20 // 4, np.float32)
        dst = np.empty_like(src)
        seconds = best(lambda d=dst, s=src: np.copyto(d, s))
        out[f"copy_gbps_{name}_{mb}mb"] = round(2 * src.nbytes / seconds / 1e9, 1)
    return out


def mem_info() -> dict[str, int]:
    """/proc/meminfo in bytes ({} where unavailable)."""
    try:
        rows = (line.split() for line in Path("/proc/meminfo").read_text().splitlines())
        return {r[0].rstrip(":"): int(r[1]) * 1024 for r in rows if len(r) >= 2}
    except OSError:
        return {}


def available_memory(device: str = "cpu") -> int:
    """Bytes a case may use: free GPU memory on CUDA, MemAvailable on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return mem_info().get("MemAvailable", 0)


# ---- timing -----------------------------------------------------------------------------------------
def check_device(parser, device: str) -> None:
    """parser.error (exit 2, usage shown) when a CUDA device is asked for and none is available."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def time_fn(fn: Callable[[], object], device: str = "cpu", repeats: int = 3, warmup: int = 1,
            budget_s: float | None = None) -> dict:
    """Median wall time of `repeats` calls after `warmup` calls (CUDA-synchronised).

    Stops repeating early once `budget_s` seconds have been spent in timed calls (at least one call)."""
    for _ in range(warmup):
        fn()
        sync(device)
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) >= budget_s:
            break
    return {"median_s": statistics.median(times), "times_s": times}


# ---- peak memory ------------------------------------------------------------------------------------
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: str = "cpu") -> int:
    """Start a peak-memory window; returns the current usage in bytes (the window's baseline)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return torch.cuda.memory_allocated(torch.device(device))
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then VmHWM / ru_maxrss also covers setup: an upper bound
    return (_status_kb("VmRSS") or 0) * 1024


def read_peak(device: str = "cpu") -> int:
    """Peak bytes since `reset_peak`: CUDA max allocated, or this process's peak RSS (VmHWM)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device))
    hwm = _status_kb("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _child(conn, target: Callable, kwargs: dict) -> None:
    try:
        conn.send({"ok": True, "result": target(**kwargs)})
    except BaseException as exc:  # noqa: BLE001 - report anything (MemoryError, RuntimeError, ...)
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
    finally:
        conn.close()


def run_isolated(target: Callable, timeout_s: float | None = None, **kwargs) -> dict:
    """Run `target(**kwargs)` (a module-level function returning a picklable dict) in a fresh spawned process.

    Returns {"ok": True, "result": ...} or {"ok": False, "error": ...}; a child killed by the OOM killer or
    the timeout is reported as an error rather than taking the benchmark down."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, target, kwargs))
    proc.start()
    send.close()
    out, timed_out = None, False
    try:
        if recv.poll(timeout_s):
            out = recv.recv()
        else:
            timed_out = True
    except EOFError:
        pass
    proc.join(5 if out is not None else 0.5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if out is None:
        why = f"timed out after {timeout_s} s" if timed_out else f"exit code {proc.exitcode}, OOM-killed?"
        out = {"ok": False, "error": f"child process died ({why})"}
    return out


# ---- output -----------------------------------------------------------------------------------------
def write_json(name: str, data: dict, out: str | os.PathLike | None = None) -> Path:
    """Write `data` to `out` or bench/results/<name>.json; returns the path."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Rows of dicts -> a GitHub markdown table over `columns` (missing cells are blank)."""
    def cell(x):
        return "" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def fmt_gb(nbytes: float | None) -> str | None:
    return None if nbytes is None else f"{nbytes / GB:.2f}"
