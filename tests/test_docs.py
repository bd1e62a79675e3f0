# amaranth: UnusedElaboratable=no
"""The generated documentation: blocks and pictures current, every field and array documented,
the documented constraints true, the generated Verilog instance compiling, links resolving."""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from leanattn import docs
from leanattn.diagrams import TIMELINE_LENGTHS, design_graph, hierarchy_svg, timeline_png
from leanattn.docs import stale_blocks, stale_images
from leanattn.hdl.config import PRESETS, AttentionConfig
from leanattn.sim.job import load_job
from leanattn.sim.perf import predict

ROOT = Path(__file__).resolve().parent.parent
OWN_DOCS = ("architecture.md", "config.md", "jobs.md", "integration.md")


def test_generated_doc_blocks_are_current():
    assert stale_blocks(ROOT) == [], "run `python -m leanattn.docs` to regenerate"


def test_generated_pictures_are_current():
    assert stale_images(ROOT) == [], "run `python -m leanattn.docs` to regenerate"


def test_every_block_and_picture_is_referenced():
    for file, name, _ in docs.BLOCKS:
        text = (ROOT / file).read_text()
        assert f"<!-- {name}:begin -->" in text and f"<!-- {name}:end -->" in text, (file, name)
    for file, _ in docs.IMAGES:
        picture = Path(file).relative_to("docs").as_posix()
        assert any(f"]({picture})" in (ROOT / "docs" / page).read_text() for page in OWN_DOCS), file


# --- the block diagram ----------------------------------------------------------------------------

def _edges(design):
    return {(e.src, e.src_port, e.dst, e.dst_port) for e in design.edges}


def test_design_graph_default_dataflow():
    cfg = PRESETS["default"]
    design = design_graph(cfg)
    edges = _edges(design)
    pairs = {(e.src, e.dst) for e in design.edges}
    for c in range(cfg.cores):
        assert ("sched", f"o_seg_{c}", f"core_{c}", "i_seg") in edges
        assert ("qwrite_slice", "o_data", f"core_{c}", "i_qwrite") in edges
        assert ("core_" + str(c), "o_partial", f"leaf_buffer_{c}", "w_stream") in edges
        assert (f"leaf_buffer_{c}", "r_stream", "tree", f"i_leaf_{c}") in edges
        assert (f"mem_{c}", f"i_k_{c}", f"core_{c}", "i_k") in edges
        assert (f"core_{c}", "o_vreq", f"mem_{c}", f"o_vreq_{c}") in edges
        assert (f"core_{c}", "o_partial", "arbiter", f"i_{c}") in edges
    assert ("loader", "o_qwrite", "qwrite_slice", "i_data") in edges     # the writes leave a register
    for pair in [("i_desc", "loader"), ("i_query", "loader"), ("loader", "dwrite_slice"),
                 ("dwrite_slice", "sched"), ("dwrite_slice", "scales"),
                 ("tree", "arbiter"), ("arbiter", "scales"), ("scales", "final_skid"),
                 ("final_skid", "norm"), ("norm", "o_out")]:
        assert pair in pairs, pair
    # ready runs against the data: no arrow may point back up the pipeline
    assert ("norm", "arbiter") not in pairs and ("core_0", "sched") not in pairs
    assert not any(e.src_port.endswith("ready") or e.dst_port.endswith("ready") for e in design.edges)


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_design_graph_follows_the_configuration(cores):
    cfg = PRESETS["tiny"].replace(cores=cores)
    design = design_graph(cfg)
    kinds = [b.kind for b in design.blocks.values()]
    assert kinds.count("AttentionCore") == cores
    assert kinds.count("ReductionTree") == (cores > 1)
    if cores > 1:
        nodes = [name for name, kind, _ in design.blocks["tree"].children if kind == "TreeNode"]
        assert len(nodes) == cores - 1
    core = dict((name, kind) for name, kind, _ in design.blocks["core_0"].children)
    assert core["dot"] == "DotProduct" and core["softmax"] == "OnlineSoftmax"


def test_hierarchy_svg_is_deterministic_and_complete():
    cfg = PRESETS["tiny"]
    first, second = hierarchy_svg(cfg), hierarchy_svg(cfg)
    assert first == second
    assert first.startswith("<svg ") and first.rstrip().endswith("</svg>")
    design = design_graph(cfg)
    for name in design.blocks:
        assert f">{design.blocks[name].label}</text>" in first, name
    assert first.count("marker-end=") == len({(e.src, e.dst) for e in design.edges})
    assert "/work" not in first and "/tmp" not in first           # no paths of this machine


def test_hierarchy_svg_rejects_a_non_config():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        hierarchy_svg({"head_dim": 32})


# --- the timeline --------------------------------------------------------------------------------

def test_timeline_png_is_deterministic():
    cfg = PRESETS["tiny"]
    lengths = (40, 7, 90)
    first = timeline_png(cfg, lengths)
    assert first == timeline_png(cfg, lengths)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"matplotlib" not in first                              # no software tag


def test_timeline_example_job_is_ragged_and_cut():
    """The pictured job shows what the page says: heads cut across cores, merges at both levels."""
    cfg = PRESETS["default"]
    pred = predict(cfg, list(TIMELINE_LENGTHS))
    cut = {s.head for core in pred.cores for s in core.segments if s.cut}
    assert cut == {1, 2}
    assert {m.level for m in pred.merges} == {1, 2}
    assert len(set(TIMELINE_LENGTHS)) == len(TIMELINE_LENGTHS)


# --- the configuration reference ---------------------------------------------------------------------

def test_every_config_field_is_documented():
    assert docs._check_field_docs() == []


def test_a_field_added_without_docs_fails():
    @dataclass(frozen=True, kw_only=True)
    class Extended(AttentionConfig):
        new_knob: int = 3

    Extended.__doc__ = AttentionConfig.__doc__          # dataclass writes a signature there
    problems = docs._check_field_docs(Extended)
    assert len(problems) == 1
    assert "new_knob needs" in problems[0]
    assert "FIELD_EFFECTS" in problems[0] and "__post_init__" in problems[0]


def test_field_docs_cover_grouped_entries():
    found = docs.field_docs()
    assert found["logit_int_bits"][0] == found["logit_frac_bits"][0] == "Numerics"
    assert found["recip_interp_bits"][1] == found["recip_index_bits"][1]
    assert "divide" in found["lanes"][1]


def _bound(source, cfg):
    return eval(source, {"max": max, "min": min}, cfg.to_dict())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_documented_ranges_are_enforced(preset):
    """Just outside every documented range, the configuration is rejected naming the field."""
    cfg = PRESETS[preset]
    ranges, _, _ = docs.field_constraints()
    assert len(ranges) >= 15
    for name, (_, _, lo, hi) in ranges.items():
        for value in (_bound(lo, cfg) - 1, _bound(hi, cfg) + 1):
            with pytest.raises(ValueError, match=name):
                cfg.replace(**{name: value})


#: A value breaking each documented rule (besides the ranges): (preset, overrides).
VIOLATIONS = {
    "lanes":          [("tiny", {"lanes": 3})],
    "cores":          [("tiny", {"cores": 3})],
    "tile":           [("tiny", {"tile": 24})],
    "schedule":       [("tiny", {"schedule": "round_robin"})],
    "quant":          [("tiny", {"quant": "per_row"})],
    "pipeline":       [("tiny", {"pipeline": "shallow"})],
    "exp_index_bits": [("tiny", {"exp_index_bits": 9})],
    "chunks":         [("default", {"chunks": 2}), ("default", {"schedule": "flashdecoding", "chunks": 3})],
}


def test_documented_rules_are_the_validation_messages():
    _, rules, _ = docs.field_constraints()
    assert set(rules) == set(VIOLATIONS), "add a violating example for every field with a rule"
    for name, cases in VIOLATIONS.items():
        messages = []
        for preset, overrides in cases:
            with pytest.raises(ValueError) as error:
                PRESETS[preset].replace(**overrides)
            messages.append(str(error.value))
        for rule in rules[name]:
            assert any(message.startswith(f"{name} {rule}") for message in messages), (name, rule)


def test_config_reference_lists_every_field_and_preset_value():
    text = docs.config_reference()
    for cfg in PRESETS.values():
        for name, value in cfg.to_dict().items():
            row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
            assert f" {value} |" in row
    assert "**`norm_cycles`**" in text


def test_derived_table_has_every_derived_width():
    text = docs.derived_table()
    for name, value in PRESETS["wide"].derived().items():
        assert re.search(rf"^\| `{name}` \|.*\| {value} \|$", text, re.M), name


# --- jobs and ports -----------------------------------------------------------------------------------

def test_job_tables_match_the_code():
    inputs = docs.job_inputs_table()
    for name in ("q", "k", "v", "lengths", "q_scale", "out_scale"):
        assert f"| `{name}` |" in inputs
    outputs = docs.job_outputs_table()
    assert "| `out_int` | int64 | (B, H, d) |" in outputs
    assert "| `config` | text | scalar |" in outputs


def test_ports_table_widths_come_from_the_configuration():
    text = docs.ports_table()
    widths = [PRESETS[p].output_bits * PRESETS[p].lanes + PRESETS[p].head_index_bits + 1 for p in PRESETS]
    cells = " | ".join(map(str, widths))
    assert f"| `o_out` | `o_out__payload`, `__valid`, `__ready` | out | {cells} |" in text


def _verilog_block(text):
    body = re.search(r"<!-- instance:begin -->\n```verilog\n(.*?)```", text, re.S)
    assert body, "no Verilog instance block in docs/integration.md"
    return body.group(1)


def test_documented_verilog_instance_compiles(tmp_path):
    """The parent module shown in docs/integration.md, with the generated tiny Verilog."""
    from leanattn.generate import generate

    paths = generate(PRESETS["tiny"], tmp_path)
    parent = tmp_path / "parent.v"
    parent.write_text(_verilog_block((ROOT / "docs/integration.md").read_text()))
    result = subprocess.run(["iverilog", "-g2005", "-s", "parent", "-o", str(tmp_path / "a.vvp"),
                             str(parent), str(paths["verilog"])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr


# --- links ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", OWN_DOCS)
def test_links_resolve(page):
    text = (ROOT / "docs" / page).read_text()
    links = re.findall(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", text)
    assert links
    for target, anchor in links:
        if target.startswith("http"):
            continue
        path = (ROOT / "docs" / target).resolve()
        assert path.exists(), f"{page} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            headings = [re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)]
            assert anchor[1:] in headings, f"{page} links to {target}{anchor}: no such heading"


def test_job_outputs_of_a_real_run_match_the_table(tmp_path):
    """`leanattn golden` writes exactly the arrays the page lists (minus the two of `leanattn sim`)."""
    from leanattn.cli import main

    job = tmp_path / "job.npz"
    rng = np.random.default_rng(3)
    np.savez(job, q=rng.standard_normal((1, 2, 32)), k=rng.standard_normal((1, 2, 9, 32)),
             v=rng.standard_normal((1, 2, 9, 32)), lengths=np.array([[9, 4]]))
    assert main(["golden", str(job), "-o", str(tmp_path / "out.npz"), "--preset", "tiny"]) == 0
    with np.load(tmp_path / "out.npz") as result:
        assert set(result.files) == set(docs.JOB_OUTPUTS) - {"cycles", "ideal_cycles"}


def test_jobs_page_python_example_runs(tmp_path, monkeypatch):
    """The Python example of docs/jobs.md writes a job file the tools accept."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs/jobs.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/jobs.md", "exec"), namespace)
    cfg = namespace["cfg"]
    assert load_job(tmp_path / "job.npz", cfg).lengths.tolist() == [100, 37]
    assert namespace["job"].flat_heads == 2
