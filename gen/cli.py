"""The ``leanattn`` command line.

Every subcommand takes ``--preset NAME`` or ``--config FILE.json`` plus repeated ``--set FIELD=VALUE``
overrides. A bad configuration or a bad job prints one line starting with ``leanattn: error:`` and
exits with status 2, writing nothing.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .hdl.config import PRESETS, SCHEDULES, AttentionConfig, parse_overrides

__all__ = ["main", "load_config"]

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def load_config(preset=None, config=None, overrides=()):
    """The configuration a command runs with: a preset or a JSON file, then ``FIELD=VALUE`` overrides."""
    if preset is not None and config is not None:
        raise UsageError("give --preset or --config, not both")
    try:
        if config is not None:
            try:
                text = Path(config).read_text()
            except OSError as error:
                raise UsageError(f"cannot read config file {config}: {error.strerror}") from None
            try:
                cfg = AttentionConfig.from_json(text)
            except json.JSONDecodeError as error:
                raise UsageError(f"config file {config} is not valid JSON: {error}") from None
        else:
            cfg = AttentionConfig.preset(preset or "default")
        return parse_overrides(cfg, overrides)
    except (TypeError, ValueError) as error:
        raise UsageError(f"invalid configuration: {error}") from None


class _FieldOverride(argparse.Action):
    """``--schedule X`` / ``--chunks N``: shorthands appending ``FIELD=VALUE`` to ``--set``."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, "overrides", None) or [])
        overrides.append(f"{self.const}={values}")
        namespace.overrides = overrides


def config_args(parser):
    """The configuration options every command shares: ``--preset``, ``--config``, ``--set`` and
    the shorthands ``--schedule``, ``--chunks``; :func:`load_config` reads them."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--preset", choices=sorted(PRESETS), help="a built-in configuration "
                       "(default: default)")
    group.add_argument("--config", metavar="FILE.json", help="a configuration file (as written by "
                       "`leanattn config`)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="change one field (repeatable)")
    group.add_argument("--schedule", dest="overrides", action=_FieldOverride, const="schedule",
                       choices=SCHEDULES, help="how a job is split over the cores: "
                       + ", ".join(SCHEDULES) + " (same as --set schedule=...)")
    group.add_argument("--chunks", dest="overrides", action=_FieldOverride, const="chunks", metavar="N",
                       help="chunks per head under flashdecoding (same as --set chunks=...)")


def target_arg(parser):
    """``--target``: what the Verilog is elaborated for (:data:`leanattn.generate.TARGETS`)."""
    parser.add_argument("--target", choices=["generic", "ecp5"], default="generic",
                        help="generic: portable Verilog, every product a `*` between registers "
                        "(default); ecp5: products with their registers inside MULT18X18D blocks, "
                        "as the ECP5 board tops build them (gen also writes mult18x18d.v, the "
                        "block's simulation model)")


def _cfg(args):
    return load_config(args.preset, args.config, args.overrides)


def _cfg_name(args):
    """How the configuration was chosen, for messages: ``tiny``, ``cfg.json + overrides``, ..."""
    name = args.preset or args.config or "default"
    return f"{name} + overrides" if args.overrides else name


def _save(path, write):
    """Run ``write(path)``; a file system error becomes a one-line message and leaves no file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as error:
        if path.is_file():
            path.unlink()
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


# -- subcommands ---------------------------------------------------------------------------------

def cmd_config(args):
    cfg = _cfg(args)
    text = cfg.to_json(with_derived=not args.fields_only)
    if args.output:
        _save(args.output, lambda path: path.write_text(text + "\n"))
    else:
        print(text)
    return 0


def cmd_golden(args):
    from .sim import golden
    from .sim.job import JobError, load_job, save_result

    cfg = _cfg(args)
    start = time.perf_counter()
    try:
        job = load_job(args.job, cfg)
    except JobError as error:
        raise UsageError(str(error)) from None
    loaded = time.perf_counter()
    result = golden.run(cfg, job)
    done = time.perf_counter()
    _save(args.output, lambda path: save_result(path, cfg, job, result.out))
    keys = int(job.lengths.sum())
    print(f"golden model: {job.flat_heads} heads, {keys} keys, head_dim {cfg.head_dim}, "
          f"{cfg.cores} cores -> {args.output}")
    print(f"time: load {loaded - start:.2f} s, datapath {done - loaded:.2f} s "
          f"({keys / max(done - loaded, 1e-9):,.0f} keys/s)")
    if args.reference:
        _print_reference(cfg, job, result.out)
    return 0


def _print_reference(cfg, job, out_int):
    from .sim.reference import attention, rel_l2

    out = out_int * job.head_scales("out")[:, None]
    floor = attention(*job.dequantized(), job.lengths)
    err = rel_l2(out, floor)
    print(f"datapath error vs float64 on the quantized inputs (relative L2 per head): "
          f"median {np.median(err):.3e}, p99 {np.percentile(err, 99):.3e}, max {err.max():.3e}")


def cmd_demo(args):
    from .sim import golden
    from .sim.demo import demo_job
    from .sim.job import Job, JobError, save_result
    from .sim.reference import attention, rel_l2

    cfg = _cfg(args)
    out_dir = Path(args.output)
    arrays = demo_job(cfg, seed=args.seed)
    try:
        job = Job.from_arrays(cfg, **arrays)
    except JobError as error:
        raise UsageError(f"the demo job does not fit this configuration: {error}") from None
    start = time.perf_counter()
    result = golden.run(cfg, job)
    elapsed = time.perf_counter() - start
    _save(out_dir / "job.npz", lambda path: np.savez(path, **arrays))
    _save(out_dir / "golden.npz", lambda path: save_result(path, cfg, job, result.out))
    out = result.out * job.head_scales("out")[:, None]
    flat = job.flat_heads
    exact = attention(arrays["q"].reshape(flat, -1).astype(np.float64),
                      arrays["k"].reshape(flat, *arrays["k"].shape[2:]).astype(np.float64),
                      arrays["v"].reshape(flat, *arrays["v"].shape[2:]).astype(np.float64),
                      job.lengths)
    floor = attention(*job.dequantized(), job.lengths)
    datapath, total = rel_l2(out, floor), rel_l2(out, exact)
    print("leanattn demo: the golden model (the bit-exact specification of the hardware) on a demo "
          "job (`leanattn sim` then runs the same job on the generated RTL)")
    print(f"config: {_cfg_name(args)} (head_dim {cfg.head_dim}, cores {cfg.cores}, lanes "
          f"{cfg.lanes}, tile {cfg.tile}, int{cfg.input_bits} {cfg.quant})")
    print(f"job: {job.batch} x {job.heads} heads, lengths {', '.join(map(str, job.lengths))} "
          f"({int(job.lengths.sum())} keys) -> {out_dir}/job.npz, {out_dir}/golden.npz")
    cut = sum(1 for parts in result.partials.values() if len(parts) > 1)
    print(f"stream-K: {cfg.cores} cores x {int(job.lengths.sum()) // cfg.cores}+ keys each, "
          f"{cut} heads cut across cores and merged in the reduction tree")
    print(f"datapath error vs float64 on the quantized inputs: median {np.median(datapath):.2e}, "
          f"max {datapath.max():.2e} (relative L2 per head)")
    print(f"end-to-end error vs float64 on the float inputs:   median {np.median(total):.2e}, "
          f"max {total.max():.2e}")
    print(f"golden model time: {elapsed * 1e3:.0f} ms")
    return 0


def cmd_gen(args):
    from .generate import generate

    cfg = _cfg(args)
    start = time.perf_counter()
    try:
        paths = generate(cfg, args.output, axis=args.axis, target=args.target)
    except OSError as error:
        raise UsageError(f"cannot write {args.output}: {error.strerror or error}") from None
    size = paths["verilog"].stat().st_size
    extra = "".join(f", {paths[key].name}" for key in ("axis", "model") if key in paths)
    print(f"leanattn gen: {_cfg_name(args)}, {args.target} -> {paths['verilog']} ({size:,} bytes){extra}, "
          f"{paths['config'].name}, {paths['manifest'].name}, {paths['core'].name} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_sim(args):
    from .generate import TARGETS
    from .hdl.dsp import write_mult18x18d_model
    from .sim.cocotb_util import CocotbTestsFailed
    from .sim.job import JobError, load_job, save_result
    from .sim.reference import attention, rel_l2
    from .sim.system import ideal_cycles, read_outputs, run_system

    cfg = _cfg(args)
    try:
        job = load_job(args.job, cfg)
    except JobError as error:
        raise UsageError(str(error)) from None
    build = Path(args.build_dir or f"build/sim/{args.simulator}")
    models = [write_mult18x18d_model(build)] if args.target == "ecp5" else []
    start = time.perf_counter()
    mismatch = None
    try:
        results, cycles, _ = run_system(cfg, [job], simulator=args.simulator, build_dir=build,
                                        latency=args.latency, stall_rate=args.stall_rate,
                                        waves=bool(args.waves), seed=args.seed,
                                        platform=TARGETS[args.target], extra_sources=models)
        golden_out = results[0].out
    except (CocotbTestsFailed, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise UsageError(f"the simulation failed: {first} (log in {build})") from None
    except AssertionError as error:
        from .sim import golden
        mismatch, golden_out, cycles = error, golden.run(cfg, job).out, [0]
    elapsed = time.perf_counter() - start
    rtl = read_outputs(cfg, build, job.flat_heads)
    ideal = ideal_cycles(cfg, job.lengths)
    _save(args.output, lambda path: save_result(path, cfg, job, rtl, cycles=cycles[0], ideal_cycles=ideal))
    if args.waves:
        source = next((p for p in (build / "harness.fst", build / "dump.fst") if p.exists()), None)
        if source is not None:
            _save(args.waves, lambda path: path.write_bytes(source.read_bytes()))
    same = mismatch is None and np.array_equal(rtl, golden_out)
    differ = int(np.sum(rtl != golden_out))
    print(f"leanattn sim: {args.simulator}, {_cfg_name(args)}: {job.flat_heads} heads, "
          f"{int(job.lengths.sum())} keys -> {args.output} ({elapsed:.1f} s)")
    print("bit-exact with the golden model: " + ("yes" if same else f"NO ({differ} outputs differ)"))
    out = rtl * job.head_scales("out")[:, None]
    err = rel_l2(out, attention(*job.dequantized(), job.lengths))
    print(f"error vs float64 on the quantized inputs (relative L2 per head): median {np.median(err):.2e}, "
          f"max {err.max():.2e}")
    if cycles[0]:
        print(f"cycles: {cycles[0]} (ideal {ideal:.0f}, efficiency {ideal / cycles[0]:.3f})")
    if not same:
        print(f"leanattn: error: the RTL differs from the golden model: {mismatch}", file=sys.stderr)
        return 1
    return 0


# -- entry point ---------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="leanattn",
        description="Generator of fixed-point decode-phase attention hardware (stream-K, Amaranth HDL).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print a configuration as JSON, with every derived width")
    config_args(p)
    p.add_argument("--fields-only", action="store_true", help="omit the derived widths")
    p.add_argument("-o", "--output", metavar="FILE.json", help="write to a file instead of stdout")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("golden", help="run a job file through the bit-exact golden model")
    p.add_argument("job", metavar="JOB.npz")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--reference", action="store_true",
                   help="also print the error against float64 attention on the quantized inputs")
    config_args(p)
    p.set_defaults(func=cmd_golden)

    p = sub.add_parser("gen", help="generate the Verilog, config.json, manifest.json and a FuseSoC .core")
    p.add_argument("-o", "--output", default="build/verilog", metavar="DIR")
    p.add_argument("--axis", action="store_true",
                   help="also write lean_attention_axis.v, the top with AXI4-Stream port names")
    target_arg(p)
    config_args(p)
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("sim", help="run a job file on the generated RTL (cocotb) and compare it with "
                       "the golden model")
    p.add_argument("job", metavar="JOB.npz")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--latency", type=int, default=2, help="extra cycles on every memory response")
    p.add_argument("--stall-rate", type=int, default=0, metavar="N",
                   help="random stalls on every memory stream, N/256 of the cycles")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--waves", metavar="FILE", help="also write an FST waveform of the run")
    p.add_argument("--build-dir", metavar="DIR",
                   help="simulation build directory (default build/sim/SIMULATOR)")
    target_arg(p)
    config_args(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("demo", help="make a demo job and run it (the main job of `make`)")
    p.add_argument("-o", "--output", default="build/demo", metavar="DIR")
    p.add_argument("--seed", type=int, default=1)
    config_args(p)
    p.set_defaults(func=cmd_demo)

    from .fpga import host, synth
    from .sim import bench, perf, report
    perf.add_parser(sub)
    bench.add_parser(sub)
    report.add_parser(sub)
    synth.add_parser(sub)
    host.add_parser(sub)
    return parser


def run_subcommand(name, add_parser, argv=None):
    """``python -m <module> ...``: the subcommand ``name`` (registered by ``add_parser``) on its
    own, with the command line's error handling; returns the exit status."""
    parser = argparse.ArgumentParser(prog="leanattn")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args([name, *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UsageError as error:
        print(f"leanattn: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"leanattn: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
