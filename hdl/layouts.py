"""Payload layouts shared between units: partial softmax states and outputs, beat by beat.

A partial state ``(m, l, o[d])`` travels as ``head_dim // lanes`` beats of ``lanes`` accumulators.
Every beat repeats the head, the empty flag, ``m`` and ``l``, so units that combine or finish
partials (merge, normalizer) work on one beat at a time without state. Beat ``b`` carries
``o[b*lanes : (b+1)*lanes]``; ``last`` marks the final beat of a partial.

Benches pack and unpack with these same layouts (``layout.const({...}).as_bits()``), so the RTL and
its tests cannot disagree about bit positions.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib.data import ArrayLayout, StructLayout

__all__ = ["partial_layout", "partial_meta_layout", "routed_partial_layout", "tree_partial_layout",
           "final_layout", "output_layout"]


def partial_layout(cfg):
    """One beat of a partial state."""
    return StructLayout({
        "head":  unsigned(cfg.head_index_bits),   # flattened head index b*H + h
        "valid": 1,                               # 0: the empty partial (merge identity)
        "m":     signed(cfg.max_bits),            # integer running max
        "l":     unsigned(cfg.acc_l_bits),        # sum of weights, exp_frac_bits fraction bits
        "o":     ArrayLayout(signed(cfg.acc_o_bits), cfg.lanes),
        "last":  1,                               # final beat of this partial
    })


def partial_meta_layout(cfg):
    """What a beat of a partial says of itself, without its accumulators: the fields of
    :func:`partial_layout` but ``l`` and ``o``."""
    fields = partial_layout(cfg).members
    return StructLayout({name: fields[name] for name in ("head", "valid", "m", "last")})


def routed_partial_layout(cfg):
    """One beat of a partial with its route decided: ``cut`` set when its head goes to the
    reduction tree (a head cut across cores), clear when the partial is already final."""
    return StructLayout({
        "partial": partial_layout(cfg),
        "cut":     1,
    })


def tree_partial_layout(cfg):
    """One beat of a partial inside the reduction tree: ``merge`` set when its head merges at the
    node it enters (the node's crossing head), worked out before the register it comes from."""
    return StructLayout({
        "partial": partial_layout(cfg),
        "merge":   1,
    })


def final_layout(cfg):
    """One beat of a finished head on its way to the normalizer: the partial plus the head's
    output scale (``out_mant * 2**-out_shift``)."""
    return StructLayout({
        "partial":   partial_layout(cfg),
        "out_mant":  unsigned(cfg.scale_bits),
        "out_shift": unsigned(cfg.out_shift_bits),
    })


def output_layout(cfg):
    """One beat of a head's output: ``lanes`` output integers."""
    return StructLayout({
        "head": unsigned(cfg.head_index_bits),
        "out":  ArrayLayout(signed(cfg.output_bits), cfg.lanes),
        "last": 1,
    })
