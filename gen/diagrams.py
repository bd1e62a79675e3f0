# amaranth: UnusedElaboratable=no
"""Pictures of the design drawn from the code, so that they cannot drift from it.

* :func:`hierarchy_svg`: the block diagram of :class:`~leanattn.hdl.top.LeanAttention` for a
  configuration. The boxes are the submodules of the elaborated design (``Fragment.get``), each
  with its own submodules nested inside; the arrows are the dataflow between them, found in the
  top's combinational statements: an arrow runs from a submodule's output (or a top input) to the
  submodule input (or top output) it drives, through any glue logic of the top. ``ready``
  signals, which flow against the data, are left out.
* :func:`timeline_png`: one decode job through the cores and the reduction tree over time, from the
  cycle model (:func:`leanattn.sim.perf.predict`): per core the K pass and the PV pass of every
  segment, coloured by head, and the tree merges and each head's last output beat.

Both are deterministic: the same code and configuration give the same bytes (the SVG is written
by hand, the PNG without a software or date tag). ``python -m leanattn.docs`` writes them into
``docs/img/``.
"""

import io
import re
from dataclasses import dataclass, field
from html import escape

from amaranth.hdl import Fragment, Value
from amaranth.hdl._ast import Assign, Switch  # statement classes; amaranth exports no public alias
from amaranth.lib import wiring

from .hdl.config import AttentionConfig

__all__ = [
    "Block", "Edge", "Design", "design_graph", "hierarchy_svg", "TIMELINE_LENGTHS", "timeline_png",
]


# --- the design as a graph ----------------------------------------------------------------------

@dataclass
class Block:
    """A box: a submodule of the top (``kind`` its class name, ``children`` its own submodules as
    ``(name, kind, children)``) or a group of top-level ports (``kind`` ``"port"``)."""
    name:     str
    kind:     str
    label:    str
    children: list = field(default_factory=list)


@dataclass(frozen=True)
class Edge:
    """Data flows from ``src`` (its port ``src_port``) into ``dst`` (its port ``dst_port``)."""
    src:      str
    src_port: str
    dst:      str
    dst_port: str


@dataclass
class Design:
    """``blocks`` by name (submodules in elaboration order, then the port groups) and ``edges``."""
    top:    str
    blocks: dict
    edges:  list


#: Top-level ports gathered into one box each: per-core memory ports by core, the rest by name.
_PORT_GROUP = re.compile(r"^[io]_(kreq|vreq|k|v)_(\d+)$")

#: Members of the FIFOs of ``amaranth.lib.fifo`` (which are not components): data-forward outputs
#: and inputs. ``w_rdy`` and ``r_en`` are the handshake against the data.
_FIFO_OUT = ("r_data", "r_rdy")
_FIFO_IN  = ("w_data", "w_en")


def _port_group(name):
    """``(block name, label)`` of the box that holds the top-level port ``name``."""
    match = _PORT_GROUP.match(name)
    if match:
        return f"mem_{match.group(2)}", f"K/V memory {match.group(2)}"
    return name, name


def _signals(value):
    """Ids of the signals a value reads (signals hash by identity only through their ids)."""
    return {id(sig) for sig in Value.cast(value)._rhs_signals()}


def _owned(component):
    """``{signal id: (port path, is_output)}`` of a submodule's data-forward ports."""
    owned = {}
    if hasattr(component, "signature") and isinstance(component.signature, wiring.Signature):
        for path, member, value in component.signature.flatten(component):
            if path[-1] == "ready":
                continue
            for sig in _signals(value):
                owned[sig] = (".".join(map(str, path[:-1] if path[-1] in ("payload", "valid") else path)),
                              member.flow == wiring.Out)
    else:
        for names, is_out in ((_FIFO_OUT, True), (_FIFO_IN, False)):
            for name in names:
                if hasattr(component, name):
                    for sig in _signals(getattr(component, name)):
                        owned[sig] = ("r_stream" if is_out else "w_stream", is_out)
    return owned


def _children(frag):
    """``[(name, kind, children)]`` of a fragment's submodules, recursively."""
    out = []
    for sub, name, _ in frag.subfragments:
        origin = sub.origins[0] if getattr(sub, "origins", None) else sub
        out.append((str(name), type(origin).__name__, _children(sub) if isinstance(sub, Fragment) else []))
    return out


def _flow_graph(statements, extra=()):
    """``{lhs signal id: {rhs signal ids}}`` of combinational statements (a ``Switch`` test feeds every
    signal its cases assign)."""
    graph = {}
    for stmt in statements:
        if isinstance(stmt, Assign):
            deps = set(_signals(stmt.rhs)) | set(extra)
            for sig in (id(s) for s in stmt.lhs._lhs_signals()):
                graph.setdefault(sig, set()).update(deps)
        elif isinstance(stmt, Switch):
            test = set(_signals(stmt.test)) | set(extra)
            for _patterns, body, _loc in stmt.cases:
                for sig, deps in _flow_graph(body, test).items():
                    graph.setdefault(sig, set()).update(deps)
    return graph


def design_graph(cfg):
    """The :class:`Design` of ``LeanAttention(cfg)``: its submodules and the dataflow between them."""
    from .hdl.top import LeanAttention

    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    top = LeanAttention(cfg)
    frag = Fragment.get(top, None)
    blocks, owner = {}, {}
    for sub, name, _ in frag.subfragments:
        component = sub.origins[0]
        blocks[name] = Block(name, type(component).__name__, name, _children(sub))
        for sig, (port, is_out) in _owned(component).items():
            owner[sig] = (name, port, is_out)
    for path, member, value in top.signature.flatten(top):
        if path[-1] == "ready":
            continue
        group, label = _port_group(path[0])
        for sig in _signals(value):
            # A top input drives the design: seen from inside, it is an output of its port box.
            owner[sig] = (group, path[0], member.flow == wiring.In)
        blocks.setdefault(group, Block(group, "port", label))
    edges = _edges(_flow_graph(frag.statements.get("comb", [])), owner)
    used = {e.src for e in edges} | {e.dst for e in edges}
    blocks = {name: b for name, b in blocks.items() if b.kind != "port" or name in used}
    return Design(top=type(top).__name__, blocks=blocks, edges=edges)


def _edges(graph, owner):
    """Edges from every owned output to the owned inputs it reaches through unowned signals."""
    forward = {}
    for lhs, deps in graph.items():
        for dep in deps:
            forward.setdefault(dep, set()).add(lhs)
    edges = set()
    for sig, (block, port, is_out) in owner.items():
        if not is_out:
            continue
        seen, todo = {sig}, [sig]
        while todo:
            for nxt in forward.get(todo.pop(), ()):
                if nxt in seen:
                    continue
                seen.add(nxt)
                if nxt in owner:
                    dst, dst_port, dst_out = owner[nxt]
                    if not dst_out and dst != block:
                        edges.add(Edge(block, port, dst, dst_port))
                else:
                    todo.append(nxt)
    return sorted(edges, key=lambda e: (e.src, e.dst, e.src_port, e.dst_port))


# --- layout ---------------------------------------------------------------------------------------

_NAT = re.compile(r"(\d+)")


def _natural(name):
    return [int(part) if part.isdigit() else part for part in _NAT.split(name)]


def _ranks(design):
    """Column of every block: longest path from the inputs; a port box that is both read and
    written (a core's memory) sits in the column before the first block it feeds."""
    blocks = design.blocks
    mixed = {name for name, b in blocks.items() if b.kind == "port"
             and any(e.dst == name for e in design.edges) and any(e.src == name for e in design.edges)}
    preds = {name: sorted({e.src for e in design.edges if e.dst == name and e.src not in mixed}
                          - {name}, key=_natural) for name in blocks}
    rank, visiting = {}, set()

    def visit(name):
        if name in rank:
            return rank[name]
        if name in visiting:        # a loop: cut it here
            return 0
        visiting.add(name)
        rank[name] = 1 + max((visit(p) for p in preds[name]), default=-1)
        visiting.discard(name)
        return rank[name]

    for name in sorted(blocks, key=_natural):
        if name not in mixed:
            visit(name)
    for name in mixed:
        succ = [rank[e.dst] for e in design.edges if e.src == name and e.dst in rank]
        rank[name] = max(0, min(succ, default=1) - 1)
    return rank


# Geometry, in SVG user units (pixels).
_COL_W, _COL_GAP, _ROW_GAP, _HEAD_H, _LINE_H, _MARGIN = 170, 70, 16, 34, 14, 20

_FILL = {
    "port": "#ffffff", "JobLoader": "#dbe9f6", "Scheduler": "#dbe9f6", "ScaleLookup": "#eadcf2",
    "AttentionCore": "#dcefdc", "ReductionTree": "#fbe3c8", "PacketArbiter": "#eadcf2",
    "SkidBuffer": "#eeeeee", "PipeRegister": "#eeeeee", "SyncFIFO": "#eeeeee",
    "Normalizer": "#eadcf2",
}


def _inner_lines(block, expanded):
    """Text lines inside a box: its submodules, indented by depth, or a pointer to the first box
    of the same kind (identical structure is drawn once)."""
    if block.kind == "port":
        return []
    if block.kind in expanded and expanded[block.kind] != block.name:
        return [f"as {expanded[block.kind]}"]
    lines = []

    def walk(children, depth):
        for name, kind, sub in children:
            text = f"{name} (memory)" if kind == "MemoryInstance" else f"{name}: {kind}"
            lines.append("  " * depth + text)
            walk(sub, depth + 1)

    walk(block.children, 0)
    return lines


def _layout(design):
    """``{block: (x, y, w, h, lines)}`` and the canvas size."""
    ranks = _ranks(design)
    columns = {}
    for name in design.blocks:
        columns.setdefault(ranks[name], []).append(name)
    expanded = {}
    for name, block in design.blocks.items():
        if block.children:
            expanded.setdefault(block.kind, name)
    order = {}
    for col in sorted(columns):
        names = sorted(columns[col], key=_natural)

        def key(name, names=names):
            linked = [order[e.src] for e in design.edges if e.dst == name and e.src in order]
            linked += [order[e.dst] for e in design.edges if e.src == name and e.dst in order]
            centre = sum(linked) / len(linked) if linked else names.index(name)
            return (centre, _natural(name))

        for i, name in enumerate(sorted(names, key=key)):
            order[name] = i            # position inside the column
        columns[col] = sorted(names, key=lambda n: order[n])
    boxes, heights = {}, {}
    for col, names in columns.items():
        y = 0
        for name in names:
            lines = _inner_lines(design.blocks[name], expanded)
            h = _HEAD_H + _LINE_H * len(lines) + (6 if lines else 0)
            boxes[name] = [_MARGIN + col * (_COL_W + _COL_GAP), y, _COL_W, h, lines]
            y += h + _ROW_GAP
        heights[col] = y - _ROW_GAP
    tallest = max(heights.values())
    for col, names in columns.items():
        offset = _MARGIN + 30 + (tallest - heights[col]) / 2
        for name in names:
            boxes[name][1] += offset
    width = 2 * _MARGIN + (max(columns) + 1) * (_COL_W + _COL_GAP) - _COL_GAP
    height = tallest + 2 * _MARGIN + 30
    return boxes, width, height


# --- SVG ------------------------------------------------------------------------------------------

def _num(x):
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _edge_path(a, b):
    """A cubic curve from box ``a`` to box ``b`` (right side to left side, or back)."""
    ax, ay, aw, ah, _ = a
    bx, by, bw, bh, _ = b
    y0, y1 = ay + min(ah, 60) / 2, by + min(bh, 60) / 2
    if bx > ax:
        x0, x1 = ax + aw, bx
    else:                       # into a box on the left (memory requests): leave on the left side
        x0, x1 = ax, bx + bw
    dx = max(30.0, abs(x1 - x0) / 2)
    sign = 1 if x1 >= x0 else -1
    return (f"M{_num(x0)},{_num(y0)} C{_num(x0 + sign * dx)},{_num(y0)} "
            f"{_num(x1 - sign * dx)},{_num(y1)} {_num(x1)},{_num(y1)}"), (x0, y0)


def hierarchy_svg(cfg, title=None):
    """The block diagram of ``LeanAttention(cfg)`` as SVG text (deterministic)."""
    design = design_graph(cfg)
    boxes, width, height = _layout(design)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="DejaVu Sans, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
        '</marker></defs>',
        f'<rect x="0" y="0" width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>',
        f'<text x="{_MARGIN}" y="{_MARGIN + 12}" font-size="15" font-weight="bold">'
        f'{escape(title or f"{design.top}: submodules and dataflow")}</text>',
    ]
    pairs = {}
    for e in design.edges:
        pairs.setdefault((e.src, e.dst), []).append(e)
    for (src, dst), edges in pairs.items():
        path, (x0, y0) = _edge_path(boxes[src], boxes[dst])
        ports = sorted({e.src_port for e in edges}, key=_natural)
        label = ", ".join(ports) + " \u2192 " + ", ".join(sorted({e.dst_port for e in edges}, key=_natural))
        out.append(f'<path d="{path}" fill="none" stroke="#555" stroke-width="1.2" '
                   f'marker-end="url(#arrow)"><title>{escape(src)} {escape(label)} {escape(dst)}'
                   f'</title></path>')
    for name, (x, y, w, h, lines) in boxes.items():
        block = design.blocks[name]
        fill = _FILL.get(block.kind, "#f6f6f6")
        dash = ' stroke-dasharray="5,3"' if block.kind == "port" else ""
        out.append(f'<g><rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" rx="6" '
                   f'fill="{fill}" stroke="#333" stroke-width="1"{dash}/>')
        out.append(f'<text x="{_num(x + 8)}" y="{_num(y + 15)}" font-size="12" font-weight="bold">'
                   f'{escape(block.label)}</text>')
        if block.kind != "port":
            out.append(f'<text x="{_num(x + 8)}" y="{_num(y + 28)}" font-size="10" fill="#444">'
                       f'{escape(block.kind)}</text>')
        for i, line in enumerate(lines):
            indent = len(line) - len(line.lstrip(" "))
            out.append(f'<text x="{_num(x + 12 + 4 * indent)}" y="{_num(y + _HEAD_H + 10 + i * _LINE_H)}" '
                       f'font-size="9.5" fill="#222">{escape(line.strip())}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- the timeline of one job ----------------------------------------------------------------------

#: The ragged example job of the timeline picture: head lengths (flattened heads).
TIMELINE_LENGTHS = (700, 90, 1500, 33, 410, 260)


def timeline_png(cfg, lengths=TIMELINE_LENGTHS, *, latency=2, dpi=100):
    """PNG bytes: the cycle model's timeline of a job of head lengths ``lengths`` on ``cfg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .sim.perf import predict

    pred = predict(cfg, list(lengths), latency=latency)
    colours = plt.get_cmap("tab10")
    rows = cfg.cores + cfg.tree_levels + 1
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.55 * rows), dpi=dpi)
    labels = []
    px_per_cycle = 0.85 * 11 * dpi / (pred.cycles * 1.02)     # the axes take about 85 % of the width
    for core in pred.cores:
        y = rows - 1 - core.core
        labels.append((y, f"core {core.core}"))
        for seg in core.segments:
            colour = colours(seg.head % 10)
            ax.broken_barh([(seg.k_first, seg.k_last - seg.k_first + 1)], (y + 0.05, 0.4),
                           facecolors=colour, alpha=0.45, edgecolor=colour)
            ax.broken_barh([(seg.v_first, seg.v_last - seg.v_first + 1)], (y - 0.45, 0.4),
                           facecolors=colour, edgecolor="black" if seg.cut else colour,
                           linewidth=1.0 if seg.cut else 0.5)
            text = f"h{seg.head}:{seg.start}-{seg.stop}"
            if (seg.v_last - seg.v_first) * px_per_cycle > 5.5 * len(text):
                ax.text((seg.v_first + seg.v_last) / 2, y - 0.25, text, ha="center", va="center",
                        fontsize=7)
    for level in range(1, cfg.tree_levels + 1):
        labels.append((rows - 1 - cfg.cores - (level - 1), f"tree level {level}"))
    for i, merge in enumerate(pred.merges):
        y = rows - 1 - cfg.cores - (merge.level - 1)
        ax.plot([merge.cycle], [y], marker="D", color=colours(merge.head % 10), markeredgecolor="black")
        ax.annotate(f"h{merge.head} at node {merge.index}: cycle {merge.cycle}", (merge.cycle, y),
                    xytext=(-8, 8 - 10 * (i % 2)), textcoords="offset points", fontsize=7, ha="right")
    y_out = 0
    labels.append((y_out, "output"))
    for head, cycle in sorted(pred.head_done.items()):
        ax.plot([cycle], [y_out], marker="v", color=colours(head % 10), markeredgecolor="black")
        ax.annotate(f"h{head}", (cycle, y_out), xytext=(-4, 7), textcoords="offset points", fontsize=7)
    ax.axvline(pred.first_segment, color="grey", linestyle=":", linewidth=1)
    ax.text(pred.first_segment, rows - 0.4, " first segment offered (load + scan)", fontsize=7,
            color="grey")
    ax.set_yticks([y for y, _ in labels], [text for _, text in labels])
    ax.set_ylim(-0.7, rows - 0.2)
    ax.set_xlim(0, pred.cycles * 1.02)
    ax.set_xlabel("cycle (from the job's first input transfer)")
    ax.set_title(f"One job on {cfg.cores} cores (head_dim {cfg.head_dim}, lanes {cfg.lanes}, "
                 f"tile {cfg.tile}): heads of {', '.join(map(str, lengths))} keys; {pred.cycles} cycles, "
                 f"ideal {pred.ideal_cycles:.0f}", fontsize=9)
    ax.legend(handles=[Patch(facecolor="#999999", alpha=0.45, label="K pass (QK, upper half)"),
                       Patch(facecolor="#999999", label="PV pass (lower half)"),
                       Patch(facecolor="#999999", edgecolor="black", label="cut head: partial to the tree")],
              loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7, frameon=False)
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
