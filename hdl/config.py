"""The single configuration of a leanattn core.

:class:`AttentionConfig` is frozen and validated at construction. It drives the hardware, the golden
model, the generator, the benches and the board builds, and is written as JSON beside every generated
Verilog file. Every width the datapath needs is a derived property, computed from the formats so that
nothing can overflow for any legal input; ``tests/test_config.py`` proves that per preset.

This module is pure Python (no Amaranth import), so the golden model and the command line load fast.
"""

import dataclasses
import json
from dataclasses import dataclass, fields

__all__ = [
    "AttentionConfig", "PRESETS", "GOLDEN_INT_BITS", "ceil_log2", "bits_for", "signed_bits", "is_pow2",
    "parse_overrides",
]


#: The golden model computes in NumPy int64; every intermediate must stay within this many bits
#: (magnitude), which leaves a margin below int64's 63.
GOLDEN_INT_BITS = 62

QUANT_MODES = ("per_tensor", "per_head")
SCHEDULES   = ("lean", "fa2", "flashdecoding")
PIPELINES   = ("full", "compact")


def ceil_log2(n):
    """Smallest ``k`` with ``2**k >= n`` (``n >= 1``)."""
    if n < 1:
        raise ValueError(f"ceil_log2 needs n >= 1, not {n}")
    return (n - 1).bit_length()


def bits_for(n):
    """Bits of an unsigned number that holds every value in ``0 .. n`` (at least 1)."""
    if n < 0:
        raise ValueError(f"bits_for needs n >= 0, not {n}")
    return max(1, n.bit_length())


def signed_bits(lo, hi):
    """Bits of a two's complement number that holds every value in ``lo .. hi``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _field_range(name, value, lo, hi):
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in the range {lo}..{hi}, not {value}")


def is_pow2(n):
    """Whether ``n`` is a power of two (1 included)."""
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Parameters of one decode-attention core; see ``docs/numerics.md`` for the formats.

    Shape and parallelism
    ---------------------
    head_dim : int
        Elements per query, key and value vector (d).
    lanes : int
        Multipliers per dot-product array (W); a core consumes W elements of K and W of V per cycle,
        one key every ``head_dim // lanes`` cycles. Must divide ``head_dim``.
    cores : int
        Parallel attention cores; a power of two, so the reduction tree has ``log2(cores)`` levels.
    tile : int
        Keys per LeanTile: the running maximum and the rescale of the accumulators advance once per
        tile. A power of two.
    max_context : int
        Longest context (keys) of one head.
    max_heads : int
        Most heads (sequences x heads, flattened) in one job.
    schedule : str
        How a job is split over the cores (:func:`leanattn.sim.partition.schedule_shares`):
        ``lean`` (stream-K: equal contiguous shares of keys), ``fa2`` (whole heads, each to the
        core with the fewest keys so far) or ``flashdecoding`` (each head cut into ``chunks``
        near-equal chunks on a group of ``chunks`` consecutive cores, the group with the fewest
        keys so far).
    chunks : int
        Chunks per head of ``flashdecoding``: a power of two up to ``cores``, or 0 for ``cores``.
        Must be 0 for the other schedules.

    Inputs
    ------
    input_bits : int
        Width of the signed q, k and v integers.
    quant : str
        How the host quantizes float inputs: one scale per tensor (``per_tensor``) or one per head
        for each of q, k and v (``per_head``).

    Numerics
    --------
    logit_int_bits, logit_frac_bits : int
        Signed fixed-point format of the base-2 logit ``s = q.k * score_scale``; integer bits include
        the sign, and the logit saturates to that range.
    scale_bits : int
        Mantissa bits of the runtime per-head score scale and output scale (``mant * 2**-shift``).
    exp_index_bits : int
        log2 of the exp2 table size. Equal to ``logit_frac_bits``: the table is indexed by the whole
        fraction. Fewer: the remaining fraction bits interpolate linearly between entries.
    exp_frac_bits : int
        Fraction bits of the exp2 weights (unsigned, one integer bit: values in [0, 2)).
    recip_index_bits, recip_interp_bits : int
        The reciprocal table has ``2**recip_index_bits`` entries indexed by the top mantissa bits of
        the softmax denominator; ``recip_interp_bits`` further mantissa bits interpolate linearly
        (0: no interpolation, the table holds interval midpoints).
    recip_frac_bits : int
        Fraction bits of the reciprocal mantissa (values in (1/2, 1]).
    output_bits : int
        Width of the signed output integers (saturated, never wrapped).

    Implementation
    --------------
    dsp_bits : int
        Operand width of the target's hardware multipliers (16: iCE40 SB_MAC16, 18: ECP5
        MULT18X18D); wider products are built from slices of this width. Where a unit has several
        cycles per result (the score scaling has ``head_dim // lanes``), it reuses one multiplier
        for the slices instead of building one per slice.
    norm_cycles : int
        Cycles per output beat of the normalizer: 1 is fully parallel; more share its multipliers
        over that many cycles (fewer DSP blocks, ``norm_cycles * head_dim // lanes`` cycles per head).
    pipeline : str
        Pipeline registers: ``full`` splits the units' logic for a fast clock (the ECP5 at
        100 MHz); ``compact`` merges stages for a slow clock (the iCE40 at 24 MHz): fewer
        flip-flops and cycles of latency, longer paths between registers. The units with a compact
        form: the merge unit (:func:`leanattn.hdl.merge.merge_stages`), the reciprocal
        (:func:`leanattn.hdl.recip.recip_stages`), exp2 (:func:`leanattn.hdl.exp2.exp2_stages`),
        the score scaling (:attr:`leanattn.hdl.score.ScoreScale.latency`), the tree nodes'
        register slices (:func:`leanattn.hdl.skid.register_slice`), the downstream (no slice
        in front of the normalizer, no arbiter for one core) and the loading (no register on the
        descriptor and query writes); the scheduler's descriptors, the
        request issuers' rings of four or more and the tile buffer's records go to block RAM
        (:func:`leanattn.hdl.ring.ring_for`), and a core's K command queue holds one segment.
    """

    head_dim:          int
    lanes:             int
    cores:             int
    tile:              int
    max_context:       int
    max_heads:         int
    schedule:          str = "lean"
    chunks:            int = 0
    input_bits:        int = 8
    quant:             str = "per_head"
    logit_int_bits:    int = 8
    logit_frac_bits:   int = 10
    scale_bits:        int = 16
    exp_index_bits:    int = 10
    exp_frac_bits:     int = 16
    recip_index_bits:  int = 7
    recip_interp_bits: int = 8
    recip_frac_bits:   int = 16
    output_bits:       int = 16
    dsp_bits:          int = 18
    norm_cycles:       int = 1
    pipeline:          str = "full"

    # -- validation --------------------------------------------------------------------------------

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"{f.name} must be an integer, not {value!r}")
            if f.type is str and not isinstance(value, str):
                raise TypeError(f"{f.name} must be a string, not {value!r}")

        _field_range("head_dim", self.head_dim, 1, 4096)
        _field_range("lanes", self.lanes, 1, self.head_dim)
        if self.head_dim % self.lanes:
            raise ValueError(f"lanes must divide head_dim ({self.head_dim}), not {self.lanes}")
        _field_range("cores", self.cores, 1, 256)
        if not is_pow2(self.cores):
            raise ValueError(f"cores must be a power of two (the reduction tree is binary), "
                             f"not {self.cores}")
        _field_range("max_context", self.max_context, 1, 1 << 24)
        _field_range("max_heads", self.max_heads, 1, 1 << 16)
        _field_range("tile", self.tile, 2, 4096)
        if not is_pow2(self.tile):
            raise ValueError(f"tile must be a power of two (it counts keys in an address "
                             f"counter), not {self.tile}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        _field_range("chunks", self.chunks, 0, self.cores)
        if self.chunks and self.schedule != "flashdecoding":
            raise ValueError(f"chunks must be 0 unless schedule is flashdecoding (schedule "
                             f"{self.schedule!r}), not {self.chunks}")
        if self.chunks and not is_pow2(self.chunks):
            raise ValueError(f"chunks must be a power of two (a head's chunks fill one subtree of "
                             f"the reduction tree), not {self.chunks}")

        _field_range("input_bits", self.input_bits, 4, 16)
        if self.quant not in QUANT_MODES:
            raise ValueError(f"quant must be one of {', '.join(QUANT_MODES)}, not {self.quant!r}")

        _field_range("logit_int_bits", self.logit_int_bits, 2, 10)
        _field_range("logit_frac_bits", self.logit_frac_bits, 2, 16)
        _field_range("scale_bits", self.scale_bits, 8, 24)
        _field_range("exp_index_bits", self.exp_index_bits, 2, 12)
        if self.exp_index_bits > self.logit_frac_bits:
            raise ValueError(f"exp_index_bits must be at most logit_frac_bits ({self.logit_frac_bits}), "
                             f"not {self.exp_index_bits}")
        # At least 8: l >= 2**P >= cores bounds |o| <= 2**input_bits * l (see norm_o_bits).
        _field_range("exp_frac_bits", self.exp_frac_bits, max(8, self.exp_index_bits), 24)
        _field_range("recip_index_bits", self.recip_index_bits, 2, 14)
        _field_range("recip_interp_bits", self.recip_interp_bits, 0, 16)
        _field_range("recip_frac_bits", self.recip_frac_bits, self.recip_index_bits + 1, 24)
        _field_range("output_bits", self.output_bits, 4, 32)
        _field_range("dsp_bits", self.dsp_bits, 9, 27)
        _field_range("norm_cycles", self.norm_cycles, 1, 16)
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, not {self.pipeline!r}")

        for name in ("acc_o_bits", "out_product_bits", "scaled_qk_bits", "pv_product_bits"):
            bits = getattr(self, name)
            if bits > GOLDEN_INT_BITS:
                raise ValueError(
                    f"{name} ({bits} bits, derived from max_context {self.max_context}, input_bits "
                    f"{self.input_bits}, head_dim {self.head_dim}, exp_frac_bits {self.exp_frac_bits}, "
                    f"scale_bits {self.scale_bits}) must be at most {GOLDEN_INT_BITS} bits")

    # -- derived sizes: shape --------------------------------------------------------------------

    @property
    def beats_per_key(self):
        """Cycles one key (or value) vector takes on a W-lane port: ``head_dim // lanes``."""
        return self.head_dim // self.lanes

    @property
    def head_chunks(self):
        """Chunks per head under ``flashdecoding`` (``chunks``, or ``cores`` when 0); 1 otherwise."""
        if self.schedule != "flashdecoding":
            return 1
        return self.chunks or self.cores

    @property
    def tree_levels(self):
        """Levels of merge units in the reduction tree."""
        return ceil_log2(self.cores)

    @property
    def length_bits(self):
        """Unsigned width of a head's length field (1 .. max_context)."""
        return bits_for(self.max_context)

    @property
    def head_index_bits(self):
        """Unsigned width of a flattened head index (0 .. max_heads - 1)."""
        return bits_for(self.max_heads - 1)

    @property
    def kv_addr_bits(self):
        """Unsigned width of an element address into K or V memory (all heads at max_context)."""
        return bits_for(self.max_heads * self.max_context * self.head_dim - 1)

    # -- derived formats: inputs and scores ------------------------------------------------------

    @property
    def input_min(self):
        return -(1 << (self.input_bits - 1))

    @property
    def input_max(self):
        return (1 << (self.input_bits - 1)) - 1

    @property
    def qk_max(self):
        """Largest |q.k|: every product at (-2**(B-1))**2."""
        return self.head_dim * self.input_min * self.input_min

    @property
    def qk_bits(self):
        """Signed width of the exact dot product q.k."""
        return signed_bits(-self.qk_max, self.qk_max)

    @property
    def scaled_qk_bits(self):
        """Signed width of ``q.k * score_mant`` before the rounding shift."""
        return signed_bits(-self.qk_max * ((1 << self.scale_bits) - 1),
                           self.qk_max * ((1 << self.scale_bits) - 1))

    @property
    def score_shift_max(self):
        """Largest score shift; any larger one rounds every ``q.k * mant`` to 0 as well."""
        return self.scaled_qk_bits

    @property
    def score_shift_bits(self):
        return bits_for(self.score_shift_max)

    @property
    def logit_bits(self):
        """Signed width of a logit (``logit_int_bits`` integer bits with the sign)."""
        return self.logit_int_bits + self.logit_frac_bits

    @property
    def logit_min(self):
        """Saturation bound of the logit, in LSBs of ``2**-logit_frac_bits``."""
        return -(1 << (self.logit_bits - 1))

    @property
    def logit_max(self):
        return (1 << (self.logit_bits - 1)) - 1

    @property
    def max_min(self):
        """Range of the integer running max ``m = floor(max s)``."""
        return self.logit_min >> self.logit_frac_bits

    @property
    def max_max(self):
        return self.logit_max >> self.logit_frac_bits

    @property
    def max_bits(self):
        """Signed width of the integer running max."""
        return self.logit_int_bits

    @property
    def exp_in_min(self):
        """Smallest exp2 argument ``t = s - m * 2**F`` (in logit LSBs); the largest is below 2**F."""
        return self.logit_min - (self.max_max << self.logit_frac_bits)

    @property
    def exp_in_bits(self):
        return signed_bits(self.exp_in_min, (1 << self.logit_frac_bits) - 1)

    @property
    def shift_diff_max(self):
        """Largest difference of two running maxima (rescale and merge shifts)."""
        return self.max_max - self.max_min

    @property
    def shift_diff_bits(self):
        return bits_for(self.shift_diff_max)

    # -- derived formats: exp2 weights and accumulators ------------------------------------------

    @property
    def exp_interp_bits(self):
        """Logit fraction bits below the exp2 table index, used for linear interpolation."""
        return self.logit_frac_bits - self.exp_index_bits

    @property
    def exp_table_entries(self):
        """Entries of the exp2 table (one more when interpolating, for the right end point)."""
        return (1 << self.exp_index_bits) + (1 if self.exp_interp_bits else 0)

    @property
    def weight_bits(self):
        """Unsigned width of an exp2 weight (one integer bit, ``exp_frac_bits`` fraction bits)."""
        return self.exp_frac_bits + 1

    @property
    def weight_max(self):
        """Largest weight; exp2 saturates its output to this."""
        return (1 << self.weight_bits) - 1

    @property
    def exp_shift_max(self):
        """Right shifts of a weight from this one on give exactly 0 (weights are below 2**(P+1))."""
        return self.exp_frac_bits + 2

    @property
    def pv_product_bits(self):
        """Signed width of one product weight x value."""
        return signed_bits(self.weight_max * self.input_min, self.weight_max * self.input_max)

    @property
    def acc_l_bits(self):
        """Unsigned width of the softmax denominator l (weights summed over max_context keys)."""
        return bits_for(self.weight_max * self.max_context)

    @property
    def acc_o_bits(self):
        """Signed width of one output accumulator o_i (weights x values over max_context keys)."""
        return signed_bits(self.weight_max * self.max_context * self.input_min,
                           self.weight_max * self.max_context * -self.input_min)

    # -- derived formats: reciprocal and output --------------------------------------------------

    @property
    def recip_table_entries(self):
        return (1 << self.recip_index_bits) + (1 if self.recip_interp_bits else 0)

    @property
    def recip_bits(self):
        """Unsigned width of the reciprocal mantissa (values up to 2**recip_frac_bits inclusive)."""
        return self.recip_frac_bits + 1

    @property
    def out_shift_max(self):
        """Largest output shift; larger ones give 0 for every output."""
        return self.scale_bits + self.input_bits + 1

    @property
    def out_shift_bits(self):
        return bits_for(self.out_shift_max)

    @property
    def out_factor_bits(self):
        """Unsigned width of the per-head factor ``recip * out_mant >> recip_frac_bits``."""
        return self.scale_bits + 1

    @property
    def norm_o_bits(self):
        """Signed width of an accumulator aligned to ``exp_frac_bits`` fraction bits of o/l.

        ``|o| <= 2**B * l`` (``2**(B-1) * l`` up to the rounding of rescales and merges) and
        ``l < 2**(e+1)``, so the aligned value rounds to at most ``2**(B+P+1)`` in magnitude.
        """
        return self.input_bits + self.exp_frac_bits + 3

    @property
    def out_product_bits(self):
        """Signed width of the aligned accumulator times the per-head output factor."""
        return self.norm_o_bits + self.out_factor_bits

    @property
    def output_min(self):
        return -(1 << (self.output_bits - 1))

    @property
    def output_max(self):
        return (1 << (self.output_bits - 1)) - 1

    # -- serialization ---------------------------------------------------------------------------

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The fields, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def derived(self):
        """Every derived size, by name."""
        return {name: getattr(self, name) for name in _DERIVED}

    def to_json(self, *, with_derived=False):
        data = self.to_dict()
        if with_derived:
            data = {"fields": data, "derived": self.derived()}
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data):
        """Build from a dict of fields; a ``{"fields": ..., "derived": ...}`` dict is accepted too."""
        if not isinstance(data, dict):
            raise TypeError(f"a configuration must be a JSON object, not {type(data).__name__}")
        if "fields" in data and isinstance(data["fields"], dict):
            data = data["fields"]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    @classmethod
    def preset(cls, name):
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
        return PRESETS[name]


_DERIVED = [name for name, value in vars(AttentionConfig).items() if isinstance(value, property)]


def parse_overrides(config, assignments):
    """Apply ``FIELD=VALUE`` strings to a config; the value is parsed by the field's type."""
    types = {f.name: f.type for f in fields(AttentionConfig)}
    changes = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"an override must look like FIELD=VALUE, not {item!r}")
        if name not in types:
            raise ValueError(f"unknown configuration field {name!r} in override {item!r}")
        if types[name] is int:
            try:
                changes[name] = int(text) if text.strip().isdigit() else int(text, 0)
            except ValueError:
                raise ValueError(f"{name} must be an integer, not {text!r}") from None
        else:
            changes[name] = text.strip()
    return config.replace(**changes)


PRESETS = {
    # iCE40UP5K (5,280 logic cells, 8 SB_MAC16, 128 KiB SPRAM): one core with the compact
    # pipeline (a second core and the reduction tree do not fit), exp2 indexed by the whole 8-bit
    # logit fraction (no interpolation multiplier), weights of 15 bits so a weight x value
    # product fits one 16x16 SB_MAC16, a 1024-entry midpoint reciprocal table (block RAM, no
    # multiplier), 16-bit multiplier slices reused over several cycles where the rate allows
    # (score scaling, normalizer at 4 cycles per output beat).
    "tiny": AttentionConfig(
        head_dim=32, lanes=1, cores=1, tile=16, max_context=1024, max_heads=8,
        logit_frac_bits=8, exp_index_bits=8, exp_frac_bits=14,
        recip_index_bits=10, recip_interp_bits=0, recip_frac_bits=16,
        dsp_bits=16, norm_cycles=4, pipeline="compact",
    ),
    # ECP5-85F: 1024-entry exp2 table (one DP16KD per core), 17-bit weights for MULT18X18D.
    "default": AttentionConfig(
        head_dim=64, lanes=8, cores=4, tile=32, max_context=4096, max_heads=32,
    ),
    # Simulation and large FPGAs: long contexts; exp2 interpolated from a 257-entry table, wider
    # weights so that 2**19 keys of small weight do not vanish in rounding.
    "wide": AttentionConfig(
        head_dim=128, lanes=16, cores=8, tile=64, max_context=1 << 19, max_heads=256,
        logit_frac_bits=12, exp_index_bits=8, exp_frac_bits=20,
    ),
}
