# amaranth: UnusedElaboratable=no
"""Generated parts of the documentation, so that they cannot drift from the code.

A generated block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a Markdown file;
``python -m leanattn.docs`` rewrites every block, and ``tests/test_docs.py`` fails when a block is
stale.
"""

import importlib
import re
import sys
from pathlib import Path

from .hdl.config import PRESETS

__all__ = ["FORMAT_ROWS", "formats_table", "UNITS", "units_table", "BLOCKS", "update", "stale_blocks"]

#: Derived formats shown in docs/numerics.md: (config attribute, meaning).
FORMAT_ROWS = [
    ("input_bits",          "q, k, v integers (signed)"),
    ("qk_bits",             "q.k, exact (signed)"),
    ("scale_bits",          "score / output scale mantissa (unsigned)"),
    ("scaled_qk_bits",      "q.k x score mantissa (signed)"),
    ("logit_int_bits",      "logit integer bits, sign included"),
    ("logit_frac_bits",     "logit fraction bits (F)"),
    ("max_bits",            "integer running max m (signed)"),
    ("exp_in_bits",         "exp2 argument t = s - m 2^F (signed)"),
    ("exp_index_bits",      "exp2 table index bits"),
    ("exp_interp_bits",     "exp2 interpolation bits"),
    ("exp_table_entries",   "exp2 table entries"),
    ("exp_frac_bits",       "weight fraction bits (P)"),
    ("weight_bits",         "weight, unsigned, in [0, 2)"),
    ("pv_product_bits",     "weight x value (signed)"),
    ("acc_l_bits",          "l accumulator (unsigned)"),
    ("acc_o_bits",          "o accumulator (signed)"),
    ("shift_diff_bits",     "rescale / merge shift amount"),
    ("recip_index_bits",    "reciprocal table index bits"),
    ("recip_interp_bits",   "reciprocal interpolation bits"),
    ("recip_table_entries", "reciprocal table entries"),
    ("recip_bits",          "reciprocal mantissa (unsigned)"),
    ("norm_o_bits",         "o aligned to P fraction bits of o/l (signed)"),
    ("out_factor_bits",     "per-head output factor (unsigned)"),
    ("out_product_bits",    "aligned o x factor (signed)"),
    ("output_bits",         "output integers (signed)"),
    ("score_shift_bits",    "score shift field"),
    ("out_shift_bits",      "output shift field"),
]


def formats_table(configs=PRESETS):
    lines = ["| quantity | meaning | " + " | ".join(configs) + " |",
             "| --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for name, meaning in FORMAT_ROWS:
        values = " | ".join(str(getattr(cfg, name)) for cfg in configs.values())
        lines.append(f"| `{name}` | {meaning} | {values} |")
    return "\n".join(lines)


#: The datapath units: (class, module, how many the core has).
UNITS = [
    ("DotProduct",    "dot",       "per core"),
    ("ScoreScale",    "score",     "per core"),
    ("TileBuffer",    "tilebuf",   "per core, in OnlineSoftmax"),
    ("Exp2",          "exp2",      "per core, in OnlineSoftmax"),
    ("PVAccumulator", "pv",        "per core, in OnlineSoftmax"),
    ("Merge",         "merge",     "per reduction-tree node"),
    ("Reciprocal",    "recip",     "in the Normalizer"),
    ("Normalizer",    "normalize", "after the tree"),
]


def units_table(configs=PRESETS):
    """Latency (and, where a unit takes inputs less than once per cycle, the interval) per preset."""
    lines = ["| unit | module | instances | " + " | ".join(configs) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for name, module, where in UNITS:
        cls = getattr(importlib.import_module(f"leanattn.hdl.{module}"), name)
        cells = []
        for cfg in configs.values():
            unit = cls(cfg)
            interval = getattr(unit, "interval", 1)
            cells.append(f"{unit.latency}" + (f" (every {interval})" if interval > 1 else ""))
        lines.append(f"| `{name}` | `hdl/{module}.py` | {where} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Generated blocks: (file relative to the repository root, block name, generator).
BLOCKS = [("docs/numerics.md", "formats", formats_table), ("docs/units.md", "latency", units_table)]


def _pattern(name):
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def _render(text, name, generator):
    pattern = _pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no block '{name}' in the file")
    return pattern.sub(lambda m: m.group(1) + generator() + "\n" + m.group(3), text)


def stale_blocks(root):
    """``[(file, block)]`` whose text differs from what the code generates now."""
    stale = []
    for file, name, generator in BLOCKS:
        text = (Path(root) / file).read_text()
        if _render(text, name, generator) != text:
            stale.append((file, name))
    return stale


def update(root):
    for file, name, generator in BLOCKS:
        path = Path(root) / file
        path.write_text(_render(path.read_text(), name, generator))


if __name__ == "__main__":
    update(sys.argv[1] if len(sys.argv) > 1 else ".")
