# amaranth: UnusedElaboratable=no
"""Generated parts of the documentation, so that they cannot drift from the code.

A generated block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a Markdown file;
``python -m leanattn.docs`` rewrites every block and every picture in ``docs/img/``
(:mod:`leanattn.diagrams`), and ``tests/test_docs.py`` fails when a block or a picture is stale.

Hand-written text that the generators need (what a configuration field costs, what a job array
means) lives in tables here, keyed by name; a generator raises ``ValueError`` naming what is missing
when the code has a name the table does not, so a new field or array cannot go undocumented.
"""

import ast
import importlib
import inspect
import io
import re
import sys
import textwrap
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np

from .hdl import config as config_module
from .hdl.config import GOLDEN_INT_BITS, PRESETS, AttentionConfig

__all__ = [
    "FORMAT_ROWS", "formats_table", "UNITS", "units_table",
    "FIELD_EFFECTS", "field_docs", "field_constraints", "config_reference", "derived_table",
    "JOB_INPUTS", "JOB_OUTPUTS", "job_inputs_table", "job_outputs_table", "job_limits_table",
    "ports_table", "payload_table", "axis_table", "verilog_instance", "hierarchy_table",
    "BLOCKS", "IMAGES", "update", "stale_blocks", "stale_images",
]

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
    from .fpga.unit_resources import UNITS as REGISTRY

    registry = {unit.name: unit for unit in REGISTRY}
    lines = ["| unit | module | instances | " + " | ".join(configs) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for name, module, where in UNITS:
        cls = getattr(importlib.import_module(f"leanattn.hdl.{module}"), name)
        cells = []
        for cfg in configs.values():
            if not registry[name].present(cfg):         # a merge on one core: no tree node
                cells.append(f"none ({cfg.cores} core{'s' if cfg.cores > 1 else ''})")
                continue
            unit = cls(cfg)
            interval = getattr(unit, "interval", 1)
            cells.append(f"{unit.latency}" + (f" (every {interval})" if interval > 1 else ""))
        lines.append(f"| `{name}` | `hdl/{module}.py` | {where} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the configuration reference (docs/config.md) ---------------------------------------------------

#: What each configuration field costs and what it does to the numbers: (resources and speed,
#: accuracy). Every field of :class:`AttentionConfig` must have an entry.
FIELD_EFFECTS = {
    "head_dim": (
        "Query buffer, accumulator memory and partial packets grow with it; a key takes "
        "`head_dim / lanes` cycles, so cycles per job grow linearly; `qk_bits` grows by log2.",
        "None by itself: the score scale carries `1/sqrt(head_dim)`.",
    ),
    "lanes": (
        "Multipliers: `lanes` in the dot product and `lanes` in the PV accumulator per core, plus the "
        "normalizer's; memory and output port width `lanes` elements. Throughput is proportional.",
        "None: the bits do not depend on it.",
    ),
    "cores": (
        "Replicates the core (its multipliers, tables, tile buffer and K/V ports); `cores - 1` merge "
        "nodes in the tree, `cores` leaf buffers; throughput is proportional for long jobs.",
        "Changes where heads are cut, hence the merge roundings of cut heads (last bits only, within "
        "the error bound; a head that is not cut is unaffected).",
    ),
    "tile": (
        "Tile buffer memory per core (four tiles of logits); the last tile's PV pass after its QK pass "
        "is paid once per segment start, so larger tiles cost cycles on short shares.",
        "Changes where the running max advances, hence the rescale roundings (last bits only).",
    ),
    "max_context": (
        "Widths of lengths, addresses, `l` and `o` accumulators (`acc_l_bits`, `acc_o_bits`) and the "
        "cycle counter; the KV memory itself is outside the core.",
        "None (accumulators are sized so that nothing overflows).",
    ),
    "max_heads": (
        "Depth of the descriptor and output-scale memories, the query buffers (`max_heads * head_dim` "
        "elements per core) and the head index width.",
        "None.",
    ),
    "schedule": (
        "How the scheduler splits a job, and so the cycles of ragged jobs. The generated hardware "
        "implements {rtl_schedules} (`leanattn.hdl.top.RTL_SCHEDULES`); the golden and cycle models "
        "know every schedule.",
        "Changes which heads are cut and merged (last bits only).",
    ),
    "chunks": (
        "Only with `flashdecoding`: the size of a core group (a subtree of the reduction tree).",
        "As `schedule`.",
    ),
    "input_bits": (
        "Width of q, k, v and of every multiplier that takes them (dot product, PV accumulator); "
        "memory and port widths.",
        "Input quantization error, the dominant end-to-end error at 8 bits (`docs/numerics.md`).",
    ),
    "quant": (
        "None: the host-side tool quantizes; the hardware sees integers and per-head scales.",
        "`per_head` quantizes each head to its own range (less error than `per_tensor`).",
    ),
    "logit_int_bits": (
        "Width of logits, of the running max and of the shift amounts (`shift_diff_bits`).",
        "Logits saturate at `±2^(logit_int_bits - 1)` (base 2); too few bits distort very peaked rows.",
    ),
    "logit_frac_bits": (
        "Width of logits and of the exp2 argument; with `exp_index_bits` below it, an interpolation "
        "multiplier per core.",
        "Logit resolution `2^-logit_frac_bits`: a relative weight error of up to `2^-(F+1) * ln 2`.",
    ),
    "scale_bits": (
        "Width of the score and output scale mantissas: the score-scaling and normalizer multipliers "
        "(built from `dsp_bits` slices).",
        "Relative error `2^-scale_bits` of the realized score scale.",
    ),
    "exp_index_bits": (
        "The exp2 table: `2^exp_index_bits` entries of `weight_bits` per core (block RAM).",
        "With interpolation (fewer bits than `logit_frac_bits`) the table error grows slowly; "
        "without, the table is exact to half an LSB.",
    ),
    "exp_frac_bits": (
        "Weight width (`exp_frac_bits + 1`): the PV multipliers (weight x value must fit the "
        "target's multiplier, see `tiny`), the `l` and `o` accumulators and the normalizer.",
        "Weight resolution `2^-exp_frac_bits`: small weights round to 0; the main datapath error "
        "term on long flat rows.",
    ),
    "recip_index_bits": (
        "The reciprocal table in the normalizer: `2^recip_index_bits` entries (once per design).",
        "Reciprocal error (relative, measured in `docs/numerics.md`).",
    ),
    "recip_interp_bits": (
        "0: no interpolation multiplier (midpoint table); more bits: one multiplier of that width.",
        "Reciprocal error, with `recip_index_bits`.",
    ),
    "recip_frac_bits": (
        "Width of the reciprocal and of the output-factor multiplier in the normalizer.",
        "Reciprocal rounding `2^-recip_frac_bits` (relative).",
    ),
    "output_bits": (
        "Output port width (`lanes` integers per beat) and the normalizer's saturation.",
        "Output resolution: half an LSB of the head's output scale; outputs saturate (never wrap).",
    ),
    "dsp_bits": (
        "How wide products are sliced into the target's multipliers (16: iCE40 SB_MAC16, 18: ECP5); "
        "changes the DSP count, not the function.",
        "None: the bits do not depend on it.",
    ),
    "norm_cycles": (
        "The normalizer shares its multipliers over `norm_cycles` cycles per output beat: fewer DSP "
        "blocks, `norm_cycles * head_dim / lanes` cycles per head (dominates jobs of many short heads).",
        "None.",
    ),
    "pipeline": (
        "`compact`: fewer pipeline registers (flip-flops, which cost a logic cell each on the "
        "iCE40) and fewer cycles of latency, for a lower clock; `full`: the registers a fast clock "
        "needs.",
        "None: the bits do not depend on it.",
    ),
}

_DOC_ITEM = re.compile(r"^    ([a-z_][a-z0-9_, ]*) : (\w+)$")


def field_docs(cls=AttentionConfig):
    """``{field: (section, text)}`` from the class docstring (numpy style: ``name : type`` lines,
    ``a, b : type`` for fields described together, sections underlined with dashes)."""
    lines = inspect.getdoc(cls).splitlines()
    docs, section, names, text = {}, "", [], []

    def flush():
        for name in names:
            docs[name] = (section, " ".join(text))

    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()):
            flush()
            section, names, text = line.strip(), [], []
        elif _DOC_ITEM.match("    " + line):
            flush()
            names, text = [n.strip() for n in _DOC_ITEM.match("    " + line).group(1).split(",")], []
        elif line.startswith("    ") and names:
            text.append(line.strip())
    flush()
    return docs


def _uses_self(node):
    return any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(node))


def _bound_text(node, namespace):
    """A bound of a range check as text: a number (powers of two from 2^17 as ``2^k``) or the
    expression with ``self.`` dropped."""
    if _uses_self(node):
        return ast.unparse(node).replace("self.", "")
    value = eval(compile(ast.Expression(node), "<bound>", "eval"), namespace)  # constants only
    if value > 1 << 16 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return str(value)


_MARK = "\0"


def _message_rule(node, namespace):
    """``(field, rule)`` of a ``ValueError`` message that starts with a field name, else ``None``:
    the message up to its ``, not <value>`` tail, without parentheses that show current values."""
    if not isinstance(node, ast.JoinedStr) or not node.values or not isinstance(node.values[0], ast.Constant):
        return None
    parts = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            parts.append(str(part.value))
        elif _uses_self(part.value):
            parts.append(_MARK)
        else:
            parts.append(str(eval(compile(ast.Expression(part.value), "<message>", "eval"), namespace)))
    text = "".join(parts)
    text = text[:text.rindex(", not ")] if ", not " in text else text
    text = re.sub(r"\s*\([^()]*" + _MARK + r"[^()]*\)", "", text).replace(_MARK, "…")
    name, _, rule = text.partition(" ")
    return name, rule


def field_constraints(cls=AttentionConfig):
    """What ``__post_init__`` checks, read from its source: ``(ranges, rules, limits)``.

    ``ranges``: ``{field: (lo, hi, lo_source, hi_source)}`` of every ``_field_range`` call (text for
    the reader, and the Python source with ``self.`` dropped, to evaluate against a configuration).
    ``rules``: ``{field: [rule]}`` from every ``ValueError`` whose message starts with a field name.
    ``limits``: the derived widths checked in a loop against ``GOLDEN_INT_BITS``.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__post_init__)))
    namespace = vars(config_module)
    ranges, rules, limits = {}, {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_field_range":
            name = node.args[0].value
            lo, hi = node.args[2], node.args[3]
            ranges[name] = (_bound_text(lo, namespace), _bound_text(hi, namespace),
                            ast.unparse(lo).replace("self.", ""), ast.unparse(hi).replace("self.", ""))
        elif (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
              and getattr(node.exc.func, "id", None) == "ValueError" and node.exc.args):
            found = _message_rule(node.exc.args[0], namespace)
            if found:
                rules.setdefault(found[0], []).append(found[1])
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            if any(isinstance(n, ast.Raise) for n in ast.walk(node)):
                limits += [elt.value for elt in node.iter.elts if isinstance(elt, ast.Constant)]
    return ranges, rules, limits


def _check_field_docs(cls=AttentionConfig):
    """The fields of ``cls`` that lack a docstring entry, an effect, or any checked constraint."""
    docs = field_docs(cls)
    ranges, rules, _ = field_constraints(cls)
    problems = []
    for f in fields(cls):
        missing = [what for what, ok in (("a description in the AttentionConfig docstring", f.name in docs),
                                         ("an entry in leanattn.docs.FIELD_EFFECTS", f.name in FIELD_EFFECTS),
                                         ("a check in __post_init__", f.name in ranges or f.name in rules))
                   if not ok]
        if missing:
            problems.append(f"{f.name} needs {' and '.join(missing)}")
    stale = sorted(set(FIELD_EFFECTS) - {f.name for f in fields(cls)})
    if stale:
        problems.append(f"FIELD_EFFECTS names fields that do not exist: {', '.join(stale)}")
    return problems


def _cell(text):
    return str(text).replace("|", "\\|")


def _markdown(text):
    """Docstring text (reStructuredText roles and double backticks) as Markdown."""
    return re.sub(r":\w+:`~?", "`", text).replace("``", "`")


def _code(bound):
    return bound if bound.isdigit() or bound.startswith("2^") else f"`{bound}`"


def _effect_values():
    """Values the effect texts quote from the code (``{name}`` in :data:`FIELD_EFFECTS`)."""
    from .hdl.top import RTL_SCHEDULES

    return {"rtl_schedules": ", ".join(f"`{name}`" for name in RTL_SCHEDULES)}


def config_reference(configs=PRESETS):
    """Every field: type, default, range and rules, the value in each preset, meaning and effects."""
    problems = _check_field_docs()
    if problems:
        raise ValueError("undocumented configuration fields: " + "; ".join(problems))
    docs = field_docs()
    ranges, rules, limits = field_constraints()
    lines = ["| field | type | default | range / rule | " + " | ".join(f"`{n}`" for n in configs) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for f in fields(AttentionConfig):
        default = "required" if f.default is MISSING else f"`{f.default}`"
        rule = []
        if f.name in ranges:
            lo, hi = ranges[f.name][:2]
            rule.append(f"{_code(lo)}..{_code(hi)}")
        rule += rules.get(f.name, [])
        values = " | ".join(f"{getattr(cfg, f.name)}" for cfg in configs.values())
        lines.append(f"| `{f.name}` | {f.type.__name__} | {default} | {_cell('; '.join(rule))} | {values} |")
    lines += ["", f"Also checked: the derived widths {', '.join(f'`{n}`' for n in limits)} must be at "
              f"most {GOLDEN_INT_BITS} bits (the golden model computes in int64).", ""]
    section = None
    for f in fields(AttentionConfig):
        group, text = docs[f.name]
        if group != section:
            section = group
            lines += [f"### {group}", ""]
        resources, accuracy = (text.format(**_effect_values()) for text in FIELD_EFFECTS[f.name])
        lines += [f"**`{f.name}`** — {_markdown(text)}", "",
                  f"- Resources and speed: {resources}", f"- Accuracy: {accuracy}", ""]
    return "\n".join(lines).rstrip()


def _first_sentence(text):
    text = " ".join((text or "").split())
    return re.split(r"\.\s+(?=[A-Z])", text)[0].rstrip(".") if text else ""


def _derived_meaning(name, meanings):
    """A derived property's meaning: its docstring, the formats table, or for a bare ``x_min`` /
    ``x_max`` the other end of the range it belongs to."""
    doc = _first_sentence(getattr(AttentionConfig, name).__doc__) or meanings.get(name, "")
    if not doc and name.endswith(("_min", "_max")):
        base, end = name[:-4], name[-3:]
        other = f"{base}_{'max' if end == 'min' else 'min'}"
        doc = f"{'smallest' if end == 'min' else 'largest'} value (range with `{other}`)"
    return _markdown(doc).replace("**", "^")


def derived_table(configs=PRESETS):
    """Every derived property of :class:`AttentionConfig`, its docstring's first sentence (or the
    meaning in :data:`FORMAT_ROWS`) and its value per preset."""
    meanings = dict(FORMAT_ROWS)
    lines = ["| derived | meaning | " + " | ".join(f"`{n}`" for n in configs) + " |",
             "| --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for name in next(iter(configs.values())).derived():
        doc = _derived_meaning(name, meanings)
        values = " | ".join(str(cfg.derived()[name]) for cfg in configs.values())
        lines.append(f"| `{name}` | {_cell(doc)} | {values} |")
    return "\n".join(lines)


# --- job files (docs/jobs.md) -----------------------------------------------------------------------

#: The arrays of an input job file: (dtype, shape, rule). Every keyword of ``Job.from_arrays`` must
#: have an entry.
JOB_INPUTS = {
    "q":         ("integer or float16/32/64", "(B, H, d)",
                  "one query per sequence and head; `d` must equal `head_dim`"),
    "k":         ("integer or float16/32/64", "(B, H, Nmax, d)",
                  "keys; only the first `lengths[b, h]` rows of each head count (the rest may hold "
                  "anything, even NaN)"),
    "v":         ("integer or float16/32/64", "(B, H, Nmax, d)", "values; shape of `k`"),
    "lengths":   ("integer", "(B, H)", "context length of each head: `1 <= n <= Nmax` and "
                  "`n <= max_context`; `B * H <= max_heads`"),
    "q_scale":   ("number", "() or (B, H)", "required when `q` holds integers, forbidden when it holds "
                  "floats; finite and positive; integers must lie in the `input_bits` range"),
    "k_scale":   ("number", "() or (B, H)", "as `q_scale`, for `k`"),
    "v_scale":   ("number", "() or (B, H)", "as `q_scale`, for `v`"),
    "out_scale": ("number", "() or (B, H)", "optional: the output scale wanted; default: each head's "
                  "largest valid |v| maps to the largest output integer"),
}

#: The arrays ``leanattn golden`` writes (``leanattn sim`` adds ``cycles`` and ``ideal_cycles``).
JOB_OUTPUTS = {
    "out":          "dequantized outputs: `out_int * out_scale`",
    "out_int":      "the output integers the hardware produces (saturated to `output_bits`)",
    "out_scale":    "the output scale each head's encoded constants realize",
    "q_scale":      "the scale used for q (given, or chosen by the quantizer)",
    "k_scale":      "the scale used for k",
    "v_scale":      "the scale used for v",
    "score_mant":   "descriptor field: score scale mantissa (`scale_bits` bits)",
    "score_shift":  "descriptor field: score scale shift",
    "out_mant":     "descriptor field: output scale mantissa",
    "out_shift":    "descriptor field: output scale shift",
    "config":       "the configuration as JSON text",
    "cycles":       "`leanattn sim` only: the job's `o_cycles` on the RTL",
    "ideal_cycles": "`leanattn sim` only: `sum(lengths) * head_dim / (lanes * cores)`",
}


def job_inputs_table():
    """The input arrays, in the order ``Job.from_arrays`` takes them."""
    from .sim.job import Job

    names = [p for p in inspect.signature(Job.from_arrays).parameters if p != "cfg"]
    missing = [n for n in names if n not in JOB_INPUTS]
    if missing or set(JOB_INPUTS) - set(names):
        raise ValueError(f"JOB_INPUTS does not match Job.from_arrays: missing {missing}, "
                         f"unknown {sorted(set(JOB_INPUTS) - set(names))}")
    lines = ["| array | dtype | shape | required | rule |", "| --- | --- | --- | --- | --- |"]
    params = inspect.signature(Job.from_arrays).parameters
    for name in names:
        dtype, shape, rule = JOB_INPUTS[name]
        required = "yes" if params[name].default is inspect.Parameter.empty else "no"
        lines.append(f"| `{name}` | {dtype} | {shape} | {required} | {_cell(rule)} |")
    return "\n".join(lines)


def _symbolic(shape, sizes):
    names = {v: k for k, v in sizes.items()}
    return "(" + ", ".join(names.get(n, str(n)) for n in shape) + (",)" if len(shape) == 1 else ")")


def job_outputs_table():
    """The arrays ``save_result`` writes, with dtype and shape, read from a real result file (a
    small ``tiny`` job with B = 2, H = 3, per-head scales)."""
    from .sim import golden
    from .sim.job import Job, save_result

    cfg = PRESETS["tiny"]
    batch, heads, n_max, d = 2, 3, 5, cfg.head_dim
    rng = np.random.default_rng(0)
    job = Job.from_arrays(cfg, q=rng.standard_normal((batch, heads, d)),
                          k=rng.standard_normal((batch, heads, n_max, d)),
                          v=rng.standard_normal((batch, heads, n_max, d)),
                          lengths=np.full((batch, heads), n_max))
    buffer = io.BytesIO()
    with_sim = {"cycles": 0, "ideal_cycles": 0.0}          # what `leanattn sim` adds
    _save_result_to(buffer, save_result, cfg, job, golden.run(cfg, job).out, with_sim)
    buffer.seek(0)
    sizes = {"B": batch, "H": heads, "d": d}
    lines = ["| array | dtype | shape | meaning |", "| --- | --- | --- | --- |"]
    with np.load(buffer) as result:
        missing = [n for n in result.files if n not in JOB_OUTPUTS]
        if missing:
            raise ValueError(f"JOB_OUTPUTS has no entry for the result arrays {missing}")
        for name in result.files:
            array = result[name]
            shape = "scalar" if array.shape == () else _symbolic(array.shape, sizes)
            dtype = "text" if array.dtype.kind == "U" else str(array.dtype)
            lines.append(f"| `{name}` | {dtype} | {shape} | {_cell(JOB_OUTPUTS[name])} |")
    return "\n".join(lines)


def _save_result_to(buffer, save_result, cfg, job, out, extra):
    """``save_result`` into memory (it opens its path itself: give it a temporary file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.npz"
        save_result(path, cfg, job, out, **extra)
        buffer.write(path.read_bytes())


def job_limits_table(configs=PRESETS):
    """What a job may hold at each preset."""
    rows = [("head size `d`", lambda c: c.head_dim), ("heads `B * H`, at most", lambda c: c.max_heads),
            ("keys per head, at most", lambda c: c.max_context),
            ("integer inputs", lambda c: f"{c.input_min}..{c.input_max}"),
            ("output integers", lambda c: f"{c.output_min}..{c.output_max}"),
            ("float quantization", lambda c: c.quant)]
    lines = ["| | " + " | ".join(f"`{n}`" for n in configs) + " |",
             "| --- | " + " | ".join("---" for _ in configs) + " |"]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(str(get(c)) for c in configs.values()) + " |")
    return "\n".join(lines)


# --- ports (docs/integration.md) ----------------------------------------------------------------------

_CORE_SUFFIX = re.compile(r"_(\d+)$")


def _manifests(configs):
    from .generate import manifest
    from .hdl.top import LeanAttention

    return {name: manifest(cfg, LeanAttention(cfg)) for name, cfg in configs.items()}


def _ports_by_name(info):
    """``{collapsed name: port}``: per-core ports once, as ``<name>_<c>``."""
    out = {}
    for port in info["ports"]:
        out.setdefault(_CORE_SUFFIX.sub("_<c>", port["name"]), port)
    return out


def ports_table(configs=PRESETS):
    """The top's ports from the generator's manifest: Verilog names, direction, width per preset."""
    infos = _manifests(configs)
    per_preset = {name: _ports_by_name(info) for name, info in infos.items()}
    first = next(iter(per_preset.values()))
    lines = ["| port | Verilog | dir | " + " | ".join(f"`{n}`" for n in configs) + " | role |",
             "| --- | --- | --- | " + " | ".join("---" for _ in configs) + " | --- |"]
    for name, port in first.items():
        if port.get("kind") == "stream":
            verilog = f"`{name}__payload`, `__valid`, `__ready`"
            widths = [str(p[name]["payload_width"]) for p in per_preset.values()]
        else:
            verilog = f"`{name}`"
            widths = [str(p[name]["width"]) for p in per_preset.values()]
        role = re.sub(r"core \d+", "core <c>", port["role"])
        lines.append(f"| `{name}` | {verilog} | {port['direction']} | " + " | ".join(widths)
                     + f" | {_cell(role)} |")
    return "\n".join(lines)


_INDEX = re.compile(r"^(.*?)(\d+)$")


def _collapse_fields(fields_):
    """Runs of array elements ``x.0 .. x.n`` as one row ``x[i]``, ``i = 0..n``."""
    rows = []
    for f in fields_:
        match = _INDEX.match(f["name"])
        base = match.group(1) if match else None
        last = rows[-1] if rows else None
        follows = last is not None and f["offset"] == last["offset"] + last["count"] * f["width"]
        if (match and follows and last["base"] == base and last["width"] == f["width"]
                and last["signed"] == f["signed"]):
            last["count"] += 1
            continue
        rows.append(dict(f, base=base if match else None, count=1))
    return rows


def payload_table(preset="default"):
    """Bit fields of every stream payload at one preset (from bit 0), per-core ports once."""
    info = _manifests({preset: PRESETS[preset]})[preset]
    lines = ["| stream | field | bits | signed |", "| --- | --- | --- | --- |"]
    for name, port in _ports_by_name(info).items():
        if port.get("kind") != "stream":
            continue
        for row in _collapse_fields(port["fields"]):
            w, o = row["width"], row["offset"]
            if row["count"] > 1:
                label = f"{row['base'].rstrip('.') or ''}[i], i = 0..{row['count'] - 1}"
                bits = f"{o} + {w}·i .. {o + w - 1} + {w}·i"
            else:
                label, bits = row["name"], (f"{o}..{o + w - 1}" if w > 1 else str(o))
            lines.append(f"| `{name}` | `{label}` | {bits} | {'yes' if row['signed'] else 'no'} |")
    return "\n".join(lines)


def axis_table(configs=PRESETS):
    """The AXI4-Stream wrapper's interfaces (``leanattn gen --axis``): TDATA width per preset."""
    from .generate import axis_manifest

    infos = {name: axis_manifest(cfg)["interfaces"] for name, cfg in configs.items()}
    collapsed = {name: {re.sub(r"(\d+)$", "<c>", k): v for k, v in reversed(list(i.items()))}
                 for name, i in infos.items()}
    first = next(iter(infos.values()))
    lines = ["| interface | dir | top port | TDATA bits: " + " / ".join(f"`{n}`" for n in configs)
             + " | TUSER | TLAST |", "| --- | --- | --- | --- | --- | --- |"]
    seen = set()
    for key in first:
        name = re.sub(r"(\d+)$", "<c>", key)
        if name in seen:
            continue
        seen.add(name)
        entry = collapsed[next(iter(configs))][name]
        widths = " / ".join(str(collapsed[n][name]["tdata_width"]) for n in configs)
        top = _CORE_SUFFIX.sub("_<c>", entry["top_port"])
        lines.append(f"| `{name}` | {entry['direction']} | `{top}` | {widths} | {entry['tuser'] or '—'} | "
                     f"{entry['tlast'] or '—'} |")
    return "\n".join(lines)


def verilog_instance(preset="tiny"):
    """A plain-Verilog parent module that declares one wire per port of ``lean_attention`` at
    ``preset`` and instantiates it (generated from the manifest, so every name and width is right;
    ``tests/test_docs.py`` compiles it with Icarus Verilog)."""
    info = _manifests({preset: PRESETS[preset]})[preset]
    wires, conns = [], []
    for port in info["ports"]:
        if port.get("kind") == "stream":
            signals = [(port["signals"]["payload"], port["payload_width"]),
                       (port["signals"]["valid"], 1), (port["signals"]["ready"], 1)]
        else:
            signals = [(port["name"], port["width"])]
        for name, width in signals:
            if name not in ("clk", "rst"):
                wires.append(f"    wire {f'[{width - 1}:0] ' if width > 1 else ''}{name};")
            conns.append(f"        .{name}({name})")
    lines = ["```verilog", f"// lean_attention at the {preset} preset: every port, named as generated.",
             "module parent (input wire clk, input wire rst);", *wires, "",
             "    lean_attention u_attention (", ",\n".join(conns), "    );", "endmodule", "```"]
    return "\n".join(lines)


def hierarchy_table(preset="default"):
    """The submodules of the top at one preset, from the elaborated design (as the picture)."""
    from .diagrams import design_graph

    design = design_graph(PRESETS[preset])
    lines = ["| submodule | class | its submodules |", "| --- | --- | --- |"]
    for name, block in design.blocks.items():
        if block.kind == "port":
            continue
        subs = ", ".join(f"`{n}` ({k})" for n, k, _ in block.children) or "—"
        lines.append(f"| `{name}` | `{block.kind}` | {subs} |")
    return "\n".join(lines)


#: Generated blocks: (file relative to the repository root, block name, generator).
BLOCKS = [
    ("docs/numerics.md",     "formats",   formats_table),
    ("docs/units.md",        "latency",   units_table),
    ("docs/config.md",       "fields",    config_reference),
    ("docs/config.md",       "derived",   derived_table),
    ("docs/jobs.md",         "inputs",    job_inputs_table),
    ("docs/jobs.md",         "outputs",   job_outputs_table),
    ("docs/jobs.md",         "limits",    job_limits_table),
    ("docs/integration.md",  "ports",     ports_table),
    ("docs/integration.md",  "payloads",  payload_table),
    ("docs/integration.md",  "axis",      axis_table),
    ("docs/integration.md",  "instance",  verilog_instance),
    ("docs/architecture.md", "hierarchy", hierarchy_table),
]


def _hierarchy_image():
    from .diagrams import hierarchy_svg

    cfg = PRESETS["default"]
    return hierarchy_svg(cfg, title=f"LeanAttention at the default preset ({cfg.cores} cores): "
                                    f"submodules and dataflow").encode()


def _timeline_image():
    from .diagrams import timeline_png

    return timeline_png(PRESETS["default"])


#: Generated pictures: (file relative to the repository root, generator of its bytes).
IMAGES = [("docs/img/hierarchy.svg", _hierarchy_image), ("docs/img/timeline.png", _timeline_image)]


def _pattern(name):
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def _render(text, name, generator):
    pattern = _pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no block '{name}' in the file")
    body = generator()
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def stale_blocks(root):
    """``[(file, block)]`` whose text differs from what the code generates now."""
    stale = []
    for file, name, generator in BLOCKS:
        text = (Path(root) / file).read_text()
        if _render(text, name, generator) != text:
            stale.append((file, name))
    return stale


def stale_images(root):
    """The pictures (files) that are missing or differ from what the code draws now."""
    stale = []
    for file, generator in IMAGES:
        path = Path(root) / file
        if not path.is_file() or path.read_bytes() != generator():
            stale.append(file)
    return stale


def update(root):
    """Rewrite every generated block and picture under ``root`` (the repository)."""
    for file, name, generator in BLOCKS:
        path = Path(root) / file
        text = path.read_text()
        new = _render(text, name, generator)
        if new != text:
            path.write_text(new)
    for file, generator in IMAGES:
        path = Path(root) / file
        data = generator()
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


if __name__ == "__main__":
    update(sys.argv[1] if len(sys.argv) > 1 else ".")
