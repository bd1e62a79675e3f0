"""Verilog generation: a configuration in, ``lean_attention.v``, ``config.json``, a manifest and a
FuseSoC core description out (and, on request, the AXI4-Stream wrapper ``lean_attention_axis.v``).

A target (:data:`TARGETS`) picks what the Verilog is elaborated for: ``generic`` is portable (every
product a ``*`` between registers, for any synthesis tool to map); ``ecp5`` puts the products whose
operand and product registers fit (:func:`leanattn.hdl.dsp.registered_product`) into MULT18X18D
instances with those registers inside, as the ECP5 board tops do, and writes ``mult18x18d.v``, a
behavioural model of the block for simulation only (synthesis tools have the primitive).

The manifest (``manifest.json``) is what an integrator needs beside the Verilog: every port with its
width, direction and role, the fields of every stream payload (bit offsets, widths, signedness),
the configuration with its derived widths (the numeric formats), the error codes and the cycle
bound of a job.
"""

import dataclasses
import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from .fusesoc import core_description, core_name
from .hdl.axis import AXIStreamAttention, axis_interfaces, byte_width
from .hdl.core import AttentionCore
from .hdl.dsp import ECP5, write_mult18x18d_model
from .hdl.jobload import ERR_HEADS, ERR_LENGTH, ERR_NONE, ERR_QUERY
from .hdl.top import LeanAttention

__all__ = ["TOP_NAME", "AXIS_NAME", "TARGETS", "generate", "manifest", "axis_manifest", "payload_fields"]

#: Verilog module name of the generated top.
TOP_NAME = "lean_attention"
#: Verilog module name of the AXI4-Stream wrapper (``leanattn gen --axis``).
AXIS_NAME = "lean_attention_axis"
#: What the Verilog can be elaborated for (``leanattn gen --target``): the platform object the
#: components see (None: portable Verilog).
TARGETS = {"generic": None, "ecp5": ECP5()}

_ROLES = {
    "i_desc":  "job descriptors, one per head (flattened b*H + h); last on the job's final head",
    "i_query": "query beats, head_dim/lanes per head, heads in order; last on the job's final beat",
    "o_kreq":  "K read requests of core {c}: keys from element address addr",
    "i_k":     "K read data of core {c}: lanes elements per beat, in request order",
    "o_vreq":  "V read requests of core {c}",
    "i_v":     "V read data of core {c}",
    "o_out":   "output beats: lanes integers, head_dim/lanes beats per head, tagged with the head",
    "o_busy":  "high from a job's first input transfer until it is done",
    "o_done":  "one-cycle pulse when a job is done or rejected",
    "o_error": "error code of the last job",
    "o_cycles": "cycles of the last job (first input transfer to done), saturating",
}


def payload_fields(shape, prefix=""):
    """Flat list of ``{name, offset, width, signed}`` for a payload layout (arrays indexed)."""
    if isinstance(shape, data.StructLayout):
        fields = []
        for name, field in shape:
            fields += [dict(f, offset=f["offset"] + field.offset)
                       for f in payload_fields(field.shape, f"{prefix}{name}.")]
        return fields
    if isinstance(shape, data.ArrayLayout):
        width = Shape.cast(shape.elem_shape).width
        fields = []
        for i in range(shape.length):
            fields += [dict(f, offset=f["offset"] + i * width)
                       for f in payload_fields(shape.elem_shape, f"{prefix}{i}.")]
        return fields
    s = Shape.cast(shape)
    return [{"name": prefix.rstrip(".") or "value", "offset": 0, "width": s.width, "signed": s.signed}]


def _role(name):
    base, _, core = name.rpartition("_")
    if core.isdigit():
        return _ROLES[base].format(c=core)
    return _ROLES[name]


def _ports(top):
    ports = [{"name": "clk", "direction": "in", "width": 1, "role": "clock, rising edge"},
             {"name": "rst", "direction": "in", "width": 1, "role": "synchronous reset, active high"}]
    for name, member in top.signature.members.items():
        is_in = member.flow == wiring.In
        if member.is_signature:             # every interface of the top is a stream
            shape = member.signature.members["payload"].shape
            ports.append({
                "name": name, "kind": "stream", "direction": "in" if is_in else "out",
                "role": _role(name), "payload_width": Shape.cast(shape).width,
                "signals": {"payload": f"{name}__payload", "valid": f"{name}__valid",
                            "ready": f"{name}__ready"},
                "fields": payload_fields(shape),
            })
        else:
            ports.append({"name": name, "direction": "in" if is_in else "out",
                          "width": Shape.cast(member.shape).width, "role": _role(name)})
    return ports


def manifest(cfg, top):
    """The manifest of ``top``, the :class:`LeanAttention` of ``cfg`` (a JSON-ready dict)."""
    return {
        "top": TOP_NAME,
        "config": cfg.to_dict(),
        "derived": cfg.derived(),
        "ports": _ports(top),
        "error_codes": {"none": ERR_NONE, "length": ERR_LENGTH, "heads": ERR_HEADS, "query": ERR_QUERY},
        "cycles": _cycles(cfg),
        "memory": {
            "layout": "keys of a head contiguous, head_dim elements per key, from k_base / v_base "
                      "(element addresses, multiples of lanes)",
            "outstanding_requests_per_port": AttentionCore.outstanding,
        },
    }


def axis_manifest(cfg):
    """The AXI4-Stream wrapper's interfaces: signal names and the fields of every TDATA."""
    interfaces = {}
    for name, (flow, member, layout, user, last) in axis_interfaces(cfg).items():
        interfaces[name] = {
            "direction": "in" if flow == wiring.In else "out", "top_port": member,
            "tdata_width": byte_width(Shape.cast(layout).width), "tdata_fields": payload_fields(layout),
            "tuser": "head index" if user else None, "tlast": _TLAST[name] if last else None,
        }
    return {"top": AXIS_NAME, "interfaces": interfaces,
            "status": {"busy": "o_busy", "done": "o_done", "error": "o_error", "cycles": "o_cycles"}}


_TLAST = {"s_axis_desc": "the job's last head", "s_axis_query": "the job's last query beat",
          "m_axis_out": "the head's last output beat"}


def _cycles(cfg):
    """The cycle contract: the exact model, the unit latencies and queue depths it uses (memory
    latency 0 beyond KVMemory), and (``lean``) the bound."""
    from .sim.perf import timing

    cycles = {
        "schedule": cfg.schedule,
        "exact": "`leanattn perf JOB.npz --config config.json` (leanattn.sim.perf.predict): a job's "
                 "o_cycles with no stalls, for a memory answering `latency` cycles after KVMemory",
        "timing": {name: value for name, value in dataclasses.asdict(timing(cfg, latency=0)).items()
                      if name not in ("bpk", "tile", "cores", "tree_levels", "norm_cycles")},
    }
    if cfg.schedule == "lean":
        a, b = LeanAttention.cycle_constants(cfg)
        cycles |= {"bound": "1.05 * ideal + A + B * ceil(heads / cores), no stalls, first input "
                            "transfer to last output beat; ideal = sum(lengths) * head_dim / (lanes * cores)",
                   "A": a, "B": b}
    return cycles


def generate(cfg, outdir, *, axis=False, target="generic"):
    """Write ``lean_attention.v``, ``config.json``, ``manifest.json`` and the FuseSoC core
    description into ``outdir`` (with ``axis``, also ``lean_attention_axis.v``: the AXI4-Stream
    wrapper), elaborated for ``target`` (a key of :data:`TARGETS`; ``ecp5`` also writes
    ``mult18x18d.v``, the block's simulation model); returns the paths."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    platform = TARGETS[target]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    top = LeanAttention(cfg)
    paths = {"verilog": outdir / f"{TOP_NAME}.v", "config": outdir / "config.json",
             "manifest": outdir / "manifest.json", "core": outdir / f"{core_name(cfg)}.core"}
    paths["verilog"].write_text(verilog.convert(top, name=TOP_NAME, platform=platform, emit_src=False))
    info = {"target": target, **manifest(cfg, top)}
    if axis:
        paths["axis"] = outdir / f"{AXIS_NAME}.v"
        paths["axis"].write_text(verilog.convert(AXIStreamAttention(cfg), name=AXIS_NAME, platform=platform,
                                                 emit_src=False))
        info["axis"] = axis_manifest(cfg)
    models = []
    if target == "ecp5":
        paths["model"] = write_mult18x18d_model(outdir)
        models = [paths["model"].name]
        info["simulation_models"] = {paths["model"].name: "behavioural MULT18X18D, for simulation only"}
    paths["config"].write_text(cfg.to_json() + "\n")
    paths["manifest"].write_text(json.dumps(info, indent=2) + "\n")
    paths["core"].write_text(core_description(
        cfg, verilog=paths["verilog"].name, axis=paths["axis"].name if axis else None,
        user_files=[paths["config"].name, paths["manifest"].name], sim_models=models))
    return paths
