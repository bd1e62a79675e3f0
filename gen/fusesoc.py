"""FuseSoC core descriptions (CAPI2) of generated Verilog.

:func:`core_description` writes the ``.core`` file that makes a generated folder a FuseSoC core:
the Verilog as a ``verilogSource`` fileset, the config and manifest as ``user`` files, and targets

* ``default``: toplevel ``lean_attention`` (what a parent core depends on);
* ``axis``: toplevel ``lean_attention_axis``, the AXI4-Stream wrapper (when it was generated);
* ``sim``: toplevel ``lean_attention`` with the vendor blocks' simulation models (when the
  Verilog instantiates any: ``leanattn gen --target ecp5``); the models are a fileset of their own,
  so a synthesis target never reads them.

The core is named ``leanattn:ip:<name>:<version>``: ``<name>`` is ``lean_attention_<preset>`` for
a preset configuration, ``lean_attention_<hash>`` (eight hex digits of the configuration's JSON)
for any other, so cores of several configurations can share one library.
"""

import hashlib

from .hdl.config import PRESETS

__all__ = ["core_name", "core_description", "VERSION"]

#: Version field of the generated cores.
VERSION = "0.1.0"


def core_name(cfg):
    """``lean_attention_<preset>`` or ``lean_attention_<hash of the configuration>``."""
    for name, preset in PRESETS.items():
        if preset == cfg:
            return f"lean_attention_{name}"
    return "lean_attention_" + hashlib.sha256(cfg.to_json().encode()).hexdigest()[:8]


def core_description(cfg, *, verilog, axis=None, user_files=(), sim_models=()):
    """The text of the ``.core`` file for ``verilog`` (file name, toplevel ``lean_attention``) and,
    if given, ``axis`` (the wrapper's file, toplevel ``lean_attention_axis``) and ``sim_models``
    (simulation models of the primitives the Verilog instantiates: a ``sim`` target)."""
    lines = [
        "CAPI=2:",
        f"name: leanattn:ip:{core_name(cfg)}:{VERSION}",
        f"description: Decode-attention accelerator, stream-K over {cfg.cores} cores "
        f"(head_dim {cfg.head_dim}, lanes {cfg.lanes}, tile {cfg.tile}, max_context {cfg.max_context}, "
        f"max_heads {cfg.max_heads})",
        "",
        "filesets:",
        "  rtl:",
        "    files:",
        f"      - {verilog}",
        "    file_type: verilogSource",
    ]
    if axis is not None:
        lines += ["  axis:", "    files:", f"      - {axis}", "    file_type: verilogSource"]
    if sim_models:
        lines += ["  models:", "    files:", *[f"      - {name}" for name in sim_models],
                  "    file_type: verilogSource"]
    if user_files:
        lines += ["  docs:", "    files:", *[f"      - {name}" for name in user_files], "    file_type: user"]
    docs = ", docs" if user_files else ""
    lines += [
        "",
        "targets:",
        "  default:",
        f"    filesets: [rtl{docs}]",
        "    toplevel: lean_attention",
    ]
    if axis is not None:
        lines += ["  axis:", f"    filesets: [axis{docs}]", "    toplevel: lean_attention_axis"]
    if sim_models:
        lines += ["  sim:", f"    filesets: [rtl, models{docs}]", "    toplevel: lean_attention"]
    return "\n".join(lines) + "\n"
