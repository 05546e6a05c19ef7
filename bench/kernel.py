"""`python -m bench kernel`: S4 convolution-kernel cost per Cauchy backend.

S4Kernel(H=64, d_state=64, n_ssm=1) at L = 16000 and 128000: time of ``k = kernel(L)`` (forward, autograd
on, as in training) and of ``kernel(L).square().sum().backward()`` (forward + backward), and the peak
memory of each, every case in a fresh process. C̃ is set up by one untimed ``kernel(L)`` call first.
The fused ``numba`` CPU backend (``triton`` on CUDA), the chunked ``torch`` backend and the materialising
``naive`` one (the reference's) run in the same
invocation; recorded numbers of the reference implementation are printed alongside.
"""
from __future__ import annotations

import argparse
import sys

import torch

from bench import common
from sashimi_core.ops.cauchy import set_threads

NAME = "kernel"
H, D_STATE = 64, 64
LENGTHS = (16000, 128000)
# The reference implementation on the project's original 2-core machine kind (DESIGN.md §9; CPU, 24 GB).
REFERENCE = {
    16000: {"fwd_s": 1.11, "fwdbwd_s": 12.6, "fwdbwd_peak_gb": 5.7},
    128000: {"fwd_s": 12.7, "fwd_peak_gb": 10.4},
}
TARGETS = {"fwd_peak_gb_at_128000": 1.0, "fwdbwd_speedup_at_16000": 10.0}
# Naive backend: memory in units of one (4H, N, L/2) complex64 tensor (cat'd conj pairs), measured with
# torch 2.13 on CPU: forward keeps z - w and the quotient alive (2), backward adds ~4 more.
NAIVE_FACTOR = {"fwd": 2, "fwdbwd": 6}


def naive_bytes(L: int, mode: str, h: int = H, d_state: int = D_STATE) -> int:
    """Estimated extra bytes the naive backend needs for one kernel(L) call (or call + backward)."""
    rows, modes, nodes = 4 * h, d_state, (L + 1) // 2
    return NAIVE_FACTOR[mode] * rows * modes * nodes * torch.empty((), dtype=torch.complex64).element_size()


def run_case(backend: str, L: int, mode: str, device: str, repeats: int, warmup: int,
             budget_s: float, seed: int = 0) -> dict:
    """One measured case (runs in a child process). mode: "fwd" or "fwdbwd"."""
    from sashimi_core.nn.s4 import S4Kernel

    torch.manual_seed(seed)
    kernel = S4Kernel(H, D_STATE, n_ssm=1, cauchy_backend=backend).to(device)
    with torch.no_grad():
        kernel(L)  # C̃ setup for length L (and the backend's first call / compilation), untimed
    common.sync(device)

    def fwd():
        return kernel(L)

    def fwdbwd():
        kernel.zero_grad(set_to_none=True)
        kernel(L).square().sum().backward()

    baseline = common.reset_peak(device)
    timing = common.time_fn(fwd if mode == "fwd" else fwdbwd, device, repeats, warmup, budget_s)
    return {**timing, "peak_bytes": common.read_peak(device), "baseline_bytes": baseline,
            "torch_threads": torch.get_num_threads()}


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench kernel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--L", type=int, nargs="+", default=list(LENGTHS), help="kernel lengths")
    p.add_argument("--backend", action="append", default=None,
                   help="Cauchy backend(s) to time (repeatable; default: torch, naive [, triton on cuda])")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case (median reported)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls before timing (0 for naive on CPU: nothing to compile)")
    p.add_argument("--budget", type=float, default=30.0, help="stop repeating a case after this many s")
    p.add_argument("--skip-naive-above", type=int, default=16000, metavar="L",
                   help="skip the naive backend's forward+backward for L above this")
    p.add_argument("--quick", action="store_true", help="L=16000 only, 1 repeat")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each case")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per case before it is killed")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/kernel.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.L, args.repeats = [16000], 1
    common.check_device(p, args.device)
    if args.backend is None:
        args.backend = ((["triton"] if args.device.startswith("cuda") else ["numba"]) + ["torch", "naive"])
    args.backend = [b for arg in args.backend for b in arg.split(",")]
    return args


def _case_in_child(threads, **kw):
    if threads:
        set_threads(threads)
    return run_case(**kw)


def _measure(args, backend: str, L: int, mode: str) -> dict:
    """Run one case in a fresh process, or return why it was skipped."""
    if backend == "naive":
        need = naive_bytes(L, mode)
        have = common.available_memory(args.device)
        if mode == "fwdbwd" and L > args.skip_naive_above:
            return {"skipped": f"skipped (would need ~{need / common.GB:.0f} GB)", "need_bytes": need}
        if need > 0.9 * have:
            return {"skipped": f"skipped (would need ~{need / common.GB:.0f} GB, "
                               f"{have / common.GB:.0f} GB available)", "need_bytes": need}
    warmup = 0 if (backend == "naive" and args.device == "cpu") else args.warmup
    print(f"[bench kernel] {backend:6s} L={L:<6d} {mode:6s} ...", file=sys.stderr, flush=True)
    out = common.run_isolated(_case_in_child, timeout_s=args.timeout, threads=args.threads, backend=backend,
                              L=L, mode=mode, device=args.device, repeats=args.repeats, warmup=warmup,
                              budget_s=args.budget)
    if not out["ok"]:
        return {"error": out["error"]}
    r = out["result"]
    print(f"[bench kernel]   {r['median_s']:.3f} s, peak {r['peak_bytes'] / common.GB:.2f} GB",
          file=sys.stderr, flush=True)
    return r


def _cell_time(r):
    return r.get("skipped") or r.get("error") or f"{r['median_s']:.3g}"


def _cell_mem(r):
    if "median_s" not in r:
        return "-"
    return f"{r['peak_bytes'] / common.GB:.2f} (+{(r['peak_bytes'] - r['baseline_bytes']) / common.GB:.2f})"


def _speedup(base, r):
    return f"{base / r['median_s']:.1f}x" if base and "median_s" in r else None


def summarise(results: dict, lengths, backends) -> tuple[list[dict], list[str]]:
    """Table rows and target verdicts from results[(backend, L, mode)]."""
    rows, verdicts = [], []
    for L in lengths:
        ref = REFERENCE.get(L, {})
        if ref:
            rows.append({"L": L, "backend": "reference (recorded)", "fwd s": ref.get("fwd_s"),
                         "fwd peak GB": ref.get("fwd_peak_gb"), "fwd+bwd s": ref.get("fwdbwd_s"),
                         "fwd+bwd peak GB": ref.get("fwdbwd_peak_gb")})
        naive = {m: results.get(("naive", L, m), {}).get("median_s") for m in ("fwd", "fwdbwd")}
        for b in backends:
            f, fb = results[(b, L, "fwd")], results[(b, L, "fwdbwd")]
            rows.append({"L": L, "backend": b, "fwd s": _cell_time(f), "fwd peak GB": _cell_mem(f),
                         "fwd+bwd s": _cell_time(fb), "fwd+bwd peak GB": _cell_mem(fb),
                         "fwd vs naive": _speedup(naive["fwd"], f) if b != "naive" else None,
                         "fwd+bwd vs naive": _speedup(naive["fwdbwd"], fb) if b != "naive" else None,
                         "fwd vs ref": _speedup(ref.get("fwd_s"), f),
                         "fwd+bwd vs ref": _speedup(ref.get("fwdbwd_s"), fb)})
    for b in backends:
        if b == "naive":
            continue
        f = results.get((b, 128000, "fwd"), {})
        if "peak_bytes" in f:
            gb = f["peak_bytes"] / common.GB
            ok = gb < TARGETS["fwd_peak_gb_at_128000"]
            verdicts.append(f"{b}: L=128000 forward peak {gb:.2f} GB < 1 GB: {'PASS' if ok else 'FAIL'}")
        fb = results.get((b, 16000, "fwdbwd"), {})
        if "median_s" in fb:
            x = REFERENCE[16000]["fwdbwd_s"] / fb["median_s"]
            ok = x >= TARGETS["fwdbwd_speedup_at_16000"]
            verdicts.append(f"{b}: L=16000 fwd+bwd {fb['median_s']:.2f} s = {x:.1f}x faster than the "
                            f"reference's 12.6 s (target >= 10x): {'PASS' if ok else 'FAIL'}")
    return rows, verdicts


COLUMNS = ["L", "backend", "fwd s", "fwd peak GB", "fwd+bwd s", "fwd+bwd peak GB", "fwd vs naive",
           "fwd+bwd vs naive", "fwd vs ref", "fwd+bwd vs ref"]


def main(argv=None) -> int:
    args = _parse(argv)
    env = common.env_record(args.device)
    if args.threads:
        env["torch_threads"] = args.threads
    results = {(b, L, m): _measure(args, b, L, m) for L in args.L for b in args.backend
               for m in ("fwd", "fwdbwd")}
    rows, verdicts = summarise(results, args.L, args.backend)
    data = {"benchmark": NAME, "env": env, "config": {k: v for k, v in vars(args).items()},
            "model": {"H": H, "d_state": D_STATE, "n_ssm": 1, "mode": "nplr"},
            "reference": {str(k): v for k, v in REFERENCE.items()}, "targets": TARGETS,
            "results": [{"backend": b, "L": L, "mode": m, **r} for (b, L, m), r in results.items()],
            "table": rows, "verdicts": verdicts}
    path = common.write_json(NAME, data, args.out)
    print(f"S4 kernel, H={H}, d_state={D_STATE}; {env['device']}, {common.machine_line(env)}")
    print("peak GB: peak RSS of the case's process on CPU (in brackets: above its baseline after setup); "
          "CUDA: max allocated\n")
    if env["loadavg_1m_at_start"] > 0.25 * (env["cpu_count"] or 1):
        print(f"WARNING: load average {env['loadavg_1m_at_start']} at start: other processes share the CPUs, "
              "timings are unreliable\n")
    print(common.markdown_table(rows, COLUMNS))
    print()
    for v in verdicts:
        print(v)
    print(f"\nwrote {path}")
    return 0
