"""Verilog generation: a configuration in, ``lean_attention.v``, ``config.json`` and a manifest out.

The manifest (``manifest.json``) is what an integrator needs beside the Verilog: every port with its
width, direction and role, the fields of every stream payload (bit offsets, widths, signedness),
the configuration with its derived widths (the numeric formats), the error codes and the cycle
bound of a job.
"""

import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from .hdl.core import AttentionCore
from .hdl.jobload import ERR_HEADS, ERR_LENGTH, ERR_NONE, ERR_QUERY
from .hdl.top import LeanAttention

__all__ = ["TOP_NAME", "generate", "manifest", "payload_fields"]

#: Verilog module name of the generated top.
TOP_NAME = "lean_attention"

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
        "cycles": {
            "bound": "1.05 * ideal + A + B * ceil(heads / cores), no stalls, first input transfer "
                     "to last output beat; ideal = sum(lengths) * head_dim / (lanes * cores)",
            "A": LeanAttention.cycle_constants(cfg)[0],
            "B": LeanAttention.cycle_constants(cfg)[1],
        },
        "memory": {
            "layout": "keys of a head contiguous, head_dim elements per key, from k_base / v_base "
                      "(element addresses, multiples of lanes)",
            "outstanding_requests_per_port": AttentionCore.outstanding,
        },
    }


def generate(cfg, outdir):
    """Write ``lean_attention.v``, ``config.json`` and ``manifest.json`` into ``outdir``; returns
    the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    top = LeanAttention(cfg)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    paths = {"verilog": outdir / f"{TOP_NAME}.v", "config": outdir / "config.json",
             "manifest": outdir / "manifest.json"}
    paths["verilog"].write_text(text)
    paths["config"].write_text(cfg.to_json() + "\n")
    paths["manifest"].write_text(json.dumps(manifest(cfg, top), indent=2) + "\n")
    return paths
