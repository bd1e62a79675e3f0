"""Benchmark of the golden model: wall time of ``leanattn golden`` on jobs of several sizes.

Each job is written as an ``.npz`` of int8 arrays (already quantized) and run through the command
line in a fresh process, so the time includes Python start-up and loading, as a user sees it.
Prints a Markdown table and writes ``golden.json``. The target (docs/numerics.md): one 524288-key head
at head_dim 128 (preset ``wide``) in at most 10 s.

    python -m leanattn.sim.bench_golden --out build/bench
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..hdl.config import PRESETS

TARGET_SECONDS = 10.0

#: (preset, batch, heads, keys per head)
JOBS = [
    ("tiny", 2, 4, 1024),
    ("default", 4, 8, 4096),
    ("wide", 8, 8, 65536),
    ("wide", 1, 1, 524288),
]


def write_job(path, cfg, batch, heads, keys, seed=0):
    rng = np.random.default_rng(seed)
    d = cfg.head_dim
    lo, hi = cfg.input_min + 1, cfg.input_max + 1
    np.savez(path,
             q=rng.integers(lo, hi, (batch, heads, d), dtype=np.int8),
             k=rng.integers(lo, hi, (batch, heads, keys, d), dtype=np.int8),
             v=rng.integers(lo, hi, (batch, heads, keys, d), dtype=np.int8),
             lengths=np.full((batch, heads), keys), q_scale=0.02, k_scale=0.02, v_scale=0.02)


def run_one(out_dir, preset, batch, heads, keys):
    cfg = PRESETS[preset]
    name = f"golden_{preset}_{batch}x{heads}x{keys}"
    job, result = out_dir / f"{name}.npz", out_dir / f"{name}.out.npz"
    write_job(job, cfg, batch, heads, keys)
    command = [sys.executable, "-m", "leanattn.cli", "golden", str(job), "-o", str(result),
               "--preset", preset]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    job.unlink()                                   # large; the result file stays for inspection
    total = batch * heads * keys
    return {"preset": preset, "batch": batch, "heads": heads, "keys_per_head": keys,
            "keys": total, "head_dim": cfg.head_dim, "wall_s": round(wall, 3),
            "keys_per_s": round(total / wall), "target_s": TARGET_SECONDS if keys == 524288 else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench", help="output folder")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_one(out_dir, *job) for job in tqdm(JOBS, desc="golden model", unit="job")]
    print("\n| preset | B x H | keys/head | head_dim | wall (s) | keys/s | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        target = f"<= {r['target_s']:.0f} s: {'met' if r['wall_s'] <= r['target_s'] else 'MISSED'}" \
            if r["target_s"] else ""
        print(f"| {r['preset']} | {r['batch']} x {r['heads']} | {r['keys_per_head']} | "
              f"{r['head_dim']} | {r['wall_s']:.2f} | {r['keys_per_s']:,} | {target} |")
    report = {"benchmark": "golden", "machine": platform.machine(), "python": platform.python_version(),
              "rows": rows}
    (out_dir / "golden.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out_dir / 'golden.json'}")
    missed = [r for r in rows if r["target_s"] and r["wall_s"] > r["target_s"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
