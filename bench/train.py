"""`python -m bench train`: training throughput (samples/s) and peak RSS of one optimiser step.

sashimi-8 (and sashimi-2) with B=1, L=16000: forward + cross-entropy + backward + AdamW step, with our
default CPU path (fused numba Cauchy kernels) against the chunked torch Cauchy backend in the same run
(`--naive` adds the materialising backend, the reference's algorithm, which needs ~10 GB). Each case runs in
a fresh process. The reference implementation on the project's original 2-core machine kind (DESIGN.md §9):
136 samples/s, 11.2 GB peak RSS for the 4.76M-parameter model (sashimi-sc09 here) at B=1, L=16000.
"""
from __future__ import annotations

import argparse
import sys

import torch

from bench import common
from sashimi_core.ops.cauchy import set_threads

NAME = "train"
REFERENCE = {"samples_per_s": 136, "peak_rss_gb": 11.2, "preset": "sashimi-sc09 (4.76M)", "L": 16000}
TARGET = {"samples_per_s": 1360, "peak_rss_gb": 2.8}


def run_case(preset: str, batch: int, length: int, backend: str, threads: int, repeats: int, seed: int = 0,
             device: str = "cpu", recompute: bool = False) -> dict:
    """Child process: time `repeats` optimiser steps after one warm-up step (bf16 autocast on CUDA, as the
    trainer)."""
    set_threads(threads)
    from sashimi_core import PRESETS, SaShiMi
    from sashimi_core.nn.s4 import S4Kernel

    torch.manual_seed(seed)
    model = SaShiMi(PRESETS[preset]).to(device)
    model.backbone.checkpoint_activations = recompute  # the trainer's --checkpoint-activations
    for m in model.modules():
        if isinstance(m, S4Kernel):
            m.cauchy_backend = backend
    tokens = torch.randint(0, 256, (batch, length), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = device.startswith("cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    baseline = common.reset_peak(device)
    timing = common.time_fn(step, device, repeats=repeats, warmup=1)
    return {**timing, "samples_per_s": batch * length / timing["median_s"], "peak_bytes": common.read_peak(device),
            "baseline_bytes": baseline, "torch_threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench train", description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="sashimi-8,sashimi-sc09,sashimi-2")
    p.add_argument("--lengths", default="16000")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backends", default=None, help="Cauchy backends (default numba,torch on CPU)")
    p.add_argument("--naive", action="store_true", help="also time the materialising (reference) backend")
    p.add_argument("--activations", default="keep",
                   help="keep and/or recompute (activation checkpointing, trainer --checkpoint-activations), "
                        "e.g. keep,recompute")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (on CUDA the default backends are triton,torch)")
    p.add_argument("--quick", action="store_true", help="sashimi-2 only, L=4000, 1 repeat")
    p.add_argument("--out")
    args = p.parse_args(argv)
    presets, lengths = args.presets.split(","), [int(x) for x in args.lengths.split(",")]
    common.check_device(p, args.device)
    default = "triton,torch" if args.device.startswith("cuda") else "numba,torch"
    backends = (args.backends or default).split(",") + (["naive"] if args.naive else [])
    if args.quick:
        presets, lengths, args.repeats = ["sashimi-2"], [4000], 1
    activations = args.activations.split(",")
    if not set(activations) <= {"keep", "recompute"}:
        p.error(f"--activations takes keep and/or recompute, got {args.activations!r}")
    rows = []
    cases = [(pr, L, b, a) for pr in presets for L in lengths for b in backends for a in activations]
    for preset, L, backend, act in cases:
        res = common.run_isolated(run_case, timeout_s=3600, preset=preset, batch=args.batch, length=L,
                                  backend=backend, threads=args.threads, repeats=args.repeats,
                                  device=args.device, recompute=act == "recompute")
        row = {"preset": preset, "B": args.batch, "L": L, "cauchy": backend, "activations": act}
        if res["ok"]:
            r = res["result"]
            row.update(params=r["params"], step_s=round(r["median_s"], 2),
                       samples_per_s=round(r["samples_per_s"]), peak_rss_gb=common.fmt_gb(r["peak_bytes"]),
                       vs_reference=round(r["samples_per_s"] / REFERENCE["samples_per_s"], 1),
                       torch_threads=r["torch_threads"])
        else:
            row["error"] = res["error"]
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    env = common.env_record(args.device)
    data = {"benchmark": NAME, "env": env, "rows": rows, "reference": REFERENCE,
            "target": TARGET}
    path = common.write_json(NAME, data, args.out)
    print(common.markdown_table(rows, ["preset", "params", "B", "L", "cauchy", "activations", "step_s",
                                       "samples_per_s", "vs_reference", "peak_rss_gb", "torch_threads"]))
    print(f"\nmachine: {common.machine_line(env)}")
    print(f"reference implementation (DESIGN.md, 2-core machine kind, not re-run here): "
          f"{REFERENCE['samples_per_s']} samples/s, {REFERENCE['peak_rss_gb']} GB peak RSS "
          f"({REFERENCE['preset']}, B=1, L=16000); "
          f"target >= {TARGET['samples_per_s']} samples/s at <= {TARGET['peak_rss_gb']} GB")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
