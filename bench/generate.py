"""`python -m bench generate`: autoregressive generation speed, fast engine vs the plain torch step loop.

For each preset (default sashimi-2, sashimi-8) and batch size (1, 4, 16): samples per second (aggregate over
the batch) of `generate(model, n, engine="fast")` — the numba-compiled exact step — and of
`generate(..., engine="torch")` — our plain module-by-module step loop — measured in the same run, each case
in a fresh process (peak RSS). With --device cuda: `engine="graph"` (one CUDA graph per step phase) vs the
torch loop on the GPU. 16,000 samples/s is real time at 16 kHz.
Prompt cases (--prompt-seconds): reading a prompt in convolution mode with its NLL from the same pass
(`model.prefill(prompt, return_nll=True)`, what the app does before sampling: passes of PREFILL_SEGMENT steps,
each continuing from the state the last one left, long tiers convolved in chunks with the state carried
between them, `S4Kernel.chunked_conv`) against the same read in one pass with full-length kernels (the
baseline: one Cauchy kernel and one FFT as long as the prompt per layer, measured in the same child).
The reference implementation's numbers on the project's original 2-core machine kind (DESIGN.md §9) are
printed alongside (correct dense step: 6 samples/s; its numerically wrong "diagonal" step: 461 (B=1) /
2,266 (B=16) samples/s).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from bench import common
from sashimi_core.ops.cauchy import set_threads

NAME = "generate"
REFERENCE = {"dense_b1": 6, "diagonal_b1": 461, "diagonal_b16": 2266}
TARGETS = {"sashimi-2_b1": 16000, "sashimi-8_b1": 4000, "sashimi-8_b16": 32000}
PROMPT_TARGETS_S = {"sashimi-2": 1.5, "sashimi-8": 4.0}  # a 10-s prompt read with its NLL, 2 CPU cores
REAL_TIME = 16000
GPU_TARGET_B1 = 20 * REAL_TIME  # issue target for the GPU path at batch 1


def run_case(preset: str, batch: int, engine: str, steps: int, threads: int, seed: int = 0,
             device: str = "cpu") -> dict:
    """Child process: build the preset (random init), warm up (compile), then time generate()."""
    set_threads(threads)
    from sashimi_core import PRESETS, SaShiMi, generate

    torch.manual_seed(seed)
    model = SaShiMi(PRESETS[preset]).to(device).eval()
    generate(model, 64, n_samples=batch, seed=seed, engine=engine, threads=threads)  # compile / warm up
    baseline = common.reset_peak(device)
    t0 = time.perf_counter()
    generate(model, steps, n_samples=batch, seed=seed, engine=engine, threads=threads)
    common.sync(device)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "steps": steps, "samples_per_s": batch * steps / dt, "peak_bytes": common.read_peak(device),
            "baseline_bytes": baseline, "torch_threads": torch.get_num_threads()}


def run_prompt_case(preset: str, seconds: float, threads: int, seed: int = 0, device: str = "cpu") -> dict:
    """Child process: time one prompt read with its NLL, chunked (as shipped) and with full-length kernels."""
    set_threads(threads)
    from sashimi_core import PRESETS, SaShiMi
    from sashimi_core.nn import s4, sashimi

    torch.manual_seed(seed)
    model = SaShiMi(PRESETS[preset]).to(device).eval()
    tokens = torch.randint(0, 256, (1, int(seconds * REAL_TIME)), device=device)
    with torch.inference_mode():
        model.prefill(tokens[:, :4096], return_nll=True)  # warm up (numba Cauchy compile, allocator)
        baseline = common.reset_peak(device)
        t0 = time.perf_counter()
        model.prefill(tokens, return_nll=True)
        common.sync(device)
        fused = time.perf_counter() - t0
        peak = common.read_peak(device)
        t0 = time.perf_counter()  # the same model again (the app's later clicks): weight-only work is reused
        model.prefill(tokens, return_nll=True)
        common.sync(device)
        repeat = time.perf_counter() - t0
        s4.CHUNKED_CONV_MIN_LENGTH = s4.CHUNKED_READ_MIN_LENGTH = 1 << 62  # the baseline: one pass, full-length
        sashimi.PREFILL_SEGMENT = 1 << 62  # kernels (grows C̃, so it runs last)
        t0 = time.perf_counter()
        model.prefill(tokens, return_nll=True)
        common.sync(device)
        full = time.perf_counter() - t0
    return {"fused_s": fused, "repeat_s": repeat, "full_kernel_s": full, "peak_bytes": peak,
            "baseline_bytes": baseline}


def prompt_rows(presets, prompt_seconds, threads, device) -> list[dict]:
    rows = []
    for preset in presets:
        for seconds in prompt_seconds:
            res = common.run_isolated(run_prompt_case, timeout_s=900, preset=preset, seconds=seconds,
                                      threads=threads, device=device)
            row = {"preset": preset, "prompt_s": seconds}
            if res["ok"]:
                r = res["result"]
                row.update(read_with_nll_s=round(r["fused_s"], 3), repeat_read_s=round(r["repeat_s"], 3),
                           full_kernel_s=round(r["full_kernel_s"], 3),
                           speedup=round(r["full_kernel_s"] / r["fused_s"], 2),
                           peak_rss_gb=common.fmt_gb(r["peak_bytes"]))
                target = PROMPT_TARGETS_S.get(preset) if seconds == 10 else None
                if target:
                    row.update(target_s=target, meets_target=r["fused_s"] <= target)
            else:
                row["error"] = res["error"]
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return rows


def _cost(preset: str) -> dict:
    """The fast engine's work per sample for a preset (`FastSaShiMi.cost`)."""
    from sashimi_core import PRESETS, SaShiMi
    from sashimi_core.generation.fast_step import FastSaShiMi, supports

    model = SaShiMi(PRESETS[preset])
    return FastSaShiMi(model).cost() if supports(model) else {}


def _roofline(row: dict, cost: dict, machine: dict, threads: int) -> dict:
    """Achieved arithmetic and memory rates of a fast-engine row, against the machine's measured GEMM peak.
    Each of min(threads, batch) row groups streams all weights once per step, and every row its own state."""
    groups = max(1, min(threads, row["batch"]))
    steps_per_s = row["samples_per_s"] / row["batch"]
    gflops = row["samples_per_s"] * cost["flops_per_sample"] / 1e9
    peak = machine.get(f"sgemm_gflops_{groups}t") or machine.get(f"sgemm_gflops_{threads}t")
    mem = steps_per_s * (groups * cost["weight_bytes_per_step"] + row["batch"] * cost["state_bytes_per_row_step"])
    return {"gflop_per_s": round(gflops, 1), "pct_sgemm_peak": round(100 * gflops / peak, 1) if peak else None,
            "mem_gb_per_s": round(mem / 1e9, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench generate", description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="sashimi-2,sashimi-8")
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--seconds", type=float, default=2.0, help="audio seconds generated per fast case")
    p.add_argument("--torch-steps", type=int, default=128, help="steps for the (slow) torch step loop")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:i]: on the GPU the CUDA-graph engine vs the torch "
                   "step loop (the numba engine is CPU-only)")
    p.add_argument("--prompt-seconds", default="1,10", help="prompt lengths to time reading (empty: none)")
    p.add_argument("--quick", action="store_true", help="sashimi-2 only, batch 1 and 16, 0.5 s, a 10-s prompt")
    p.add_argument("--out")
    args = p.parse_args(argv)
    presets, batches = args.presets.split(","), [int(b) for b in args.batches.split(",")]
    if args.quick:
        presets, batches, args.seconds, args.prompt_seconds = ["sashimi-2"], [1, 16], 0.5, "10"
    common.check_device(p, args.device)
    engines = [("fast", int(args.seconds * REAL_TIME)), ("torch", args.torch_steps)]
    if args.device != "cpu":
        engines = [("graph", int(args.seconds * REAL_TIME)), ("torch", args.torch_steps)]
    machine = common.cpu_peaks(args.threads) if args.device == "cpu" else {}
    costs = {name: _cost(name) for name in presets} if args.device == "cpu" else {}
    rows = []
    for preset in presets:
        for batch in batches:
            for engine, steps in engines:
                res = common.run_isolated(run_case, timeout_s=900, preset=preset, batch=batch, engine=engine,
                                          steps=steps, threads=args.threads, device=args.device)
                row = {"preset": preset, "batch": batch, "engine": engine}
                if res["ok"]:
                    r = res["result"]
                    row.update(samples_per_s=round(r["samples_per_s"]),
                               real_time_x=round(r["samples_per_s"] / REAL_TIME, 2), steps=r["steps"],
                               peak_rss_gb=common.fmt_gb(r["peak_bytes"]), torch_threads=r["torch_threads"])
                else:
                    row["error"] = res["error"]
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    for row in rows:
        if row["engine"] != "torch" and "samples_per_s" in row:
            slow = next((r for r in rows if r["engine"] == "torch" and r["preset"] == row["preset"]
                         and r["batch"] == row["batch"] and "samples_per_s" in r), None)
            if slow:
                row["speedup_vs_torch_step"] = round(row["samples_per_s"] / slow["samples_per_s"], 1)
            if row["engine"] == "fast" and costs.get(row["preset"]):
                row.update(_roofline(row, costs[row["preset"]], machine, args.threads))
            key = f"{row['preset']}_b{row['batch']}"
            target = TARGETS.get(key) if row["engine"] == "fast" else GPU_TARGET_B1 if row["batch"] == 1 else None
            if target:
                row["target"] = target
                row["meets_target"] = row["samples_per_s"] >= target
    prompts = prompt_rows(presets, [float(x) for x in args.prompt_seconds.split(",") if x.strip()], args.threads,
                          args.device)
    env = common.env_record(args.device)
    data = {"benchmark": NAME, "env": env, "threads": args.threads, "rows": rows, "prompt_rows": prompts,
            "prompt_targets_s": PROMPT_TARGETS_S,
            "machine_peaks": machine, "engine_cost": costs, "reference_samples_per_s": REFERENCE, "targets": TARGETS}
    path = common.write_json(NAME, data, args.out)
    cols = ["preset", "batch", "engine", "samples_per_s", "real_time_x", "speedup_vs_torch_step", "target",
            "meets_target", "gflop_per_s", "pct_sgemm_peak", "mem_gb_per_s", "peak_rss_gb", "torch_threads"]
    print(common.markdown_table(rows, cols))
    if prompts:
        print("\nprompt read with its NLL (long tiers in chunks, state carried), vs full-length kernels:")
        print(common.markdown_table(prompts, ["preset", "prompt_s", "read_with_nll_s", "repeat_read_s", "full_kernel_s",
                                              "speedup", "target_s", "meets_target", "peak_rss_gb"]))
    print(f"\nmachine: {common.machine_line(env)}")
    if machine:
        print(f"peaks measured in this run: {machine}")
    print(f"\nreference implementation (DESIGN.md, 2-core machine kind, not re-run here): correct dense step "
          f"{REFERENCE['dense_b1']} samples/s; 'diagonal' (wrong) step {REFERENCE['diagonal_b1']} (B=1) / "
          f"{REFERENCE['diagonal_b16']} (B=16)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
