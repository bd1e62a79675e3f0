#!/usr/bin/env python3
"""Your own activations through the accelerator: float arrays in, error report and plot out.

Steps (each one what an integrator does with real model activations):

1. float arrays ``q`` (B, H, d), ``k`` and ``v`` (B, H, Nmax, d) and ``lengths`` (B, H) -- from a
   file of your own (``--input acts.npz``) or, by default, made here with a peaked, ragged
   structure like real attention rows;
2. quantized the way the tools do it (``leanattn.sim.job.Job.from_arrays``: symmetric, one scale per
   head or per tensor, ``quant`` of the configuration) and written as a job file of integers with
   their scales (``job.npz``; a job file of the float arrays themselves gives the same bits);
3. ``leanattn golden`` (the bit-exact specification) and, unless ``--no-sim``, ``leanattn sim``
   (the generated Verilog under Verilator or Icarus Verilog, compared bit for bit);
4. an error report against float64 attention -- on the quantized integers (the datapath's own
   error) and on the float inputs (end to end, input quantization included) -- and a plot
   (``errors.png``).

Run ``python examples/own_activations.py --help``. Exit status: 0 when every check passed, 1 when
the RTL differs from the golden model, 2 for bad input.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from leanattn.hdl.config import AttentionConfig
from leanattn.sim.job import Job, JobError
from leanattn.sim.reference import attention, rel_l2

LEANATTN = [sys.executable, "-m", "leanattn.cli"]


def make_activations(cfg, *, seed=0, batch=1, heads=2, longest=48):
    """Float32 ``q, k, v, lengths`` with the structure of real decode attention: ragged contexts,
    a few keys that dominate each row, values of varied scale per head."""
    rng = np.random.default_rng(seed)
    heads = min(heads, cfg.max_heads // batch)
    n_max = min(longest, cfg.max_context)
    lengths = rng.integers(max(1, n_max // 3), n_max + 1, size=(batch, heads))
    lengths.flat[0] = n_max
    d = cfg.head_dim
    q = rng.standard_normal((batch, heads, d)).astype(np.float32)
    k = rng.standard_normal((batch, heads, n_max, d)).astype(np.float32)
    hot = rng.integers(0, lengths[..., None], size=(batch, heads, 3))          # dominant keys
    for b, h in np.ndindex(batch, heads):
        k[b, h, hot[b, h]] += 0.6 * q[b, h]
    v = (rng.standard_normal((batch, heads, n_max, d)) * rng.uniform(0.2, 3.0, (batch, heads, 1, 1)))
    return q, k, v.astype(np.float32), lengths


def load_activations(path):
    """``q, k, v, lengths`` from an ``.npz`` of your own (the job-file names)."""
    with np.load(path) as data:
        missing = [name for name in ("q", "k", "v", "lengths") if name not in data.files]
        if missing:
            raise JobError(f"{path} has no array {', '.join(missing)} (needs q, k, v, lengths)")
        return data["q"], data["k"], data["v"], data["lengths"]


def write_job(path, job):
    """The job file of a quantized job: integer ``q, k, v`` in the input shapes and their scales
    (scalars per tensor, ``(B, H)`` per head)."""
    shape = (job.batch, job.heads)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, q=job.q.reshape(*shape, -1), k=job.k.reshape(*shape, *job.k.shape[1:]),
             v=job.v.reshape(*shape, *job.v.shape[1:]), lengths=job.lengths.reshape(shape),
             q_scale=job.q_scale, k_scale=job.k_scale, v_scale=job.v_scale)


def run_tool(args, config_args):
    """Run one ``leanattn`` command; its output is shown, its exit status returned."""
    command = LEANATTN + args + config_args
    print("$ leanattn " + " ".join(args + config_args), flush=True)
    status = subprocess.run(command, check=False, stdin=subprocess.DEVNULL).returncode
    if status:
        print(f"own_activations: `leanattn {args[0]}` exited with status {status}", file=sys.stderr)
    return status


def errors(cfg, job, q, k, v, out):
    """Per-head relative L2 errors: ``(datapath, end to end)``."""
    flat = job.flat_heads
    scaled = out.reshape(flat, -1)
    floor = attention(*job.dequantized(), job.lengths)
    exact = attention(q.reshape(flat, -1).astype(np.float64),
                      k.reshape(flat, *k.shape[2:]).astype(np.float64),
                      v.reshape(flat, *v.shape[2:]).astype(np.float64), job.lengths)
    return rel_l2(scaled, floor), rel_l2(scaled, exact)


def plot(path, datapath, total, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = np.arange(len(datapath))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.bar(heads - 0.2, 100 * datapath, width=0.4, label="datapath (vs float64 on the quantized inputs)")
    ax.bar(heads + 0.2, 100 * total, width=0.4, label="end to end (vs float64 on the float inputs)")
    ax.set_xlabel("head (flattened b*H + h)")
    ax.set_ylabel("relative L2 error (%)")
    ax.set_xticks(heads)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configuration preset (default tiny)")
    parser.add_argument("--input", type=Path, help="an .npz with float q, k, v and lengths (default: "
                        "made here)")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/examples/own_activations"))
    parser.add_argument("--no-sim", action="store_true", help="golden model only (no RTL simulation)")
    parser.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cfg = AttentionConfig.preset(args.preset)
    out_dir = args.output
    try:
        q, k, v, lengths = (load_activations(args.input) if args.input
                            else make_activations(cfg, seed=args.seed))
        job = Job.from_arrays(cfg, q=q, k=k, v=v, lengths=lengths)      # the tools' quantization
    except (OSError, JobError) as error:
        print(f"own_activations: error: {error}", file=sys.stderr)
        return 2
    print(f"{job.flat_heads} heads, lengths {', '.join(map(str, job.lengths))}, int{cfg.input_bits} "
          f"{cfg.quant}: q scales {np.ravel(job.q_scale).round(5).tolist()}")
    write_job(out_dir / "job.npz", job)
    config_args = ["--preset", args.preset]

    status = run_tool(["golden", str(out_dir / "job.npz"), "-o", str(out_dir / "golden.npz")], config_args)
    if status:
        return status
    with np.load(out_dir / "golden.npz") as result:
        golden_int, golden_out = result["out_int"], result["out"]
    report = {"preset": args.preset, "heads": job.flat_heads, "lengths": job.lengths.tolist()}

    if not args.no_sim:
        status = run_tool(["sim", str(out_dir / "job.npz"), "-o", str(out_dir / "rtl.npz"),
                           "--simulator", args.simulator, "--build-dir", str(out_dir / "sim")], config_args)
        if status not in (0, 1):                # 1: the RTL differs, reported below
            return status
        with np.load(out_dir / "rtl.npz") as result:
            rtl_int, cycles, ideal = result["out_int"], int(result["cycles"]), float(result["ideal_cycles"])
        report |= {"rtl_bit_exact": bool(np.array_equal(rtl_int, golden_int)), "cycles": cycles,
                   "ideal_cycles": ideal}
        if not report["rtl_bit_exact"]:
            print("the RTL differs from the golden model", file=sys.stderr)

    datapath, total = errors(cfg, job, q, k, v, golden_out)
    report |= {"datapath_error": datapath.tolist(), "end_to_end_error": total.tolist()}
    for label, err in (("datapath", datapath), ("end-to-end", total)):
        print(f"{label} error (relative L2 per head): median {np.median(err):.2e}, max {err.max():.2e}")
    if "cycles" in report:
        print(f"RTL bit-exact with the golden model: {'yes' if report['rtl_bit_exact'] else 'NO'}; "
              f"{report['cycles']} cycles (ideal {ideal:.0f})")
    plot(out_dir / "errors.png", datapath, total,
         f"{args.preset}: {job.flat_heads} heads, int{cfg.input_bits} {cfg.quant}")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out_dir / 'report.json'}, plot: {out_dir / 'errors.png'}")
    return 0 if report.get("rtl_bit_exact", True) else 1


if __name__ == "__main__":
    sys.exit(main())
