"""Wide products from slices the target's multipliers take, on multipliers shared over cycles.

A product ``x * y`` with operands wider than the target's multipliers (``AttentionConfig.dsp_bits``:
16 on the iCE40's SB_MAC16, 18 on the ECP5's MULT18X18D) is the exact sum of partial products of
slices: ``x = sum(x_i * 2**a_i)`` (unsigned low slices; the top one signed when ``x`` is signed),
``y = sum(y_j * 2**b_j)`` (unsigned), so ``x * y = sum(x_i * y_j * 2**(a_i + b_j))``.

:class:`SlicedProducts` plans ``count`` such products ``x_k * y`` (one ``y`` for all of them) on
``multipliers`` multipliers that each take one partial product per cycle, over ``phases`` cycles,
and builds them into a pipeline as two register stages (see :meth:`SlicedProducts.multiply` and
:meth:`SlicedProducts.accumulate`; :meth:`SlicedProducts.registered_multiply` for one phase with
the operand registers inside the multipliers). With one phase this is a plain parallel multiplier: one
multiplier per slice and their sum. A unit that takes a new operand only every few cycles shares
its multipliers over those cycles instead: ``multipliers = ceil(slices / cycles)``.
"""

from dataclasses import dataclass

from amaranth.hdl import Mux, Signal

from .dsp import registered_product
from .fixed import QFormat, product_range

__all__ = ["Slice", "SlicedProducts"]


@dataclass(frozen=True)
class Slice:
    """One partial product ``x_k[x_off:x_off+x_width] * y[y_off:y_off+y_width]`` of product ``k``
    (``product``), placed at ``offset = x_off + y_off``; ``x_signed`` for the top slice of a signed
    ``x``; ``lo .. hi`` its exact range."""
    product:  int
    x_off:    int
    x_width:  int
    x_signed: bool
    y_off:    int
    y_width:  int
    lo:       int
    hi:       int

    @property
    def offset(self):
        return self.x_off + self.y_off


def _cuts(lo, hi, low_bits, dsp_bits):
    """``(offset, width, signed, lo, hi)`` of the slices of a value in ``lo .. hi``, least
    significant first: unsigned ``low_bits``-bit slices, then the top one (signed when the value
    is) of at most ``dsp_bits`` bits."""
    fmt = QFormat.for_range(lo, hi)
    cuts, off = [], 0
    while fmt.width - off > dsp_bits:
        cuts.append((off, low_bits, False, 0, (1 << low_bits) - 1))
        off += low_bits
    cuts.append((off, fmt.width - off, fmt.signed, lo >> off, hi >> off))
    return cuts


def _by_phase(phase, choices):
    """One value per phase, ``choices = {phase: (key, value)}``: the value of the current phase
    (any, in a phase not listed). Phases whose keys are equal share a value: a single key needs no
    multiplexer."""
    groups = {}
    for p, (key, value) in sorted(choices.items()):
        groups.setdefault(key, (value, []))[1].append(p)
    ordered = sorted(groups.values(), key=lambda group: len(group[1]))
    result = ordered[-1][0]                         # the most common value is the default
    for value, members in ordered[:-1]:
        hit = phase == members[0]
        for p in members[1:]:
            hit = hit | (phase == p)
        result = Mux(hit, value, result)
    return result


class SlicedProducts:
    """``count`` products ``x_k * y`` from ``dsp_bits``-wide slices, shared over ``cycles`` cycles.

    Plan: the slices of each product, most significant first, product after product, fill a table
    of ``phases`` rows of ``multipliers`` slots (empty slots first), with ``multipliers =
    ceil(slices * count / cycles)`` and ``phases = ceil(slices * count / multipliers) <= cycles``.
    A multiplier that computes the signed top slice of ``x`` in one phase and an unsigned slice in
    another has one operand format for both: the low slices of ``x`` are then ``dsp_bits - 1`` bits
    wide (zero-extended, they are positive ``dsp_bits``-bit signed values); otherwise
    ``dsp_bits``, as a multiplier of its own takes the top slice signed and the others unsigned.

    Parameters
    ----------
    x_range : (int, int)
        Smallest and largest ``x_k`` (signed when the smallest is negative).
    y_range : (int, int)
        Smallest and largest ``y`` (at least 0).
    count : int
        Products, one per ``x_k``, all with the same ``y``.
    dsp_bits : int
        Operand width of the target's multipliers.
    cycles : int
        Cycles the products may take; at most this many phases.

    Members
    -------
    slices : tuple of Slice
        The partial products of all ``count`` products.
    table : tuple of tuple of (Slice or None)
        ``table[phase][multiplier]``: what each multiplier computes in each phase.
    multipliers, phases : int
        Multipliers and phases of the plan.
    x_shape, y_shape : Shape
        The narrowest shapes of the operands.
    product_shape : Shape
        Exact shape of one product (``x_range`` times ``y_range``).
    latency : int
        Cycles from the first phase to the complete products in the accumulators:
        ``phases + 1`` (the partial product registers, then the accumulators).
    """

    def __init__(self, *, x_range, y_range, count=1, dsp_bits, cycles):
        for name, pair in (("x_range", x_range), ("y_range", y_range)):
            if (not isinstance(pair, tuple) or len(pair) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                raise TypeError(f"{name} must be a pair of integers, not {pair!r}")
            if pair[0] > pair[1]:
                raise ValueError(f"{name} must be (lo, hi) with lo <= hi, not {pair!r}")
        if y_range[0] < 0:
            raise ValueError(f"y_range must be unsigned (lo >= 0), not {y_range!r}")
        for name, value, least in (("count", count, 1), ("dsp_bits", dsp_bits, 2), ("cycles", cycles, 1)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < least:
                raise ValueError(f"{name} must be at least {least}, not {value}")
        self.x_range, self.y_range = x_range, y_range
        self.count, self.dsp_bits, self.cycles = count, dsp_bits, cycles
        self.x_shape = QFormat.for_range(*x_range).shape
        self.y_shape = QFormat.for_range(*y_range).shape
        self.product_shape = QFormat.for_range(*product_range(x_range, y_range)).shape

        self._plan(dsp_bits)
        if any(len({s.x_signed for s in column if s is not None}) > 1 for column in zip(*self.table)):
            self._plan(dsp_bits - 1)

    def _plan(self, low_bits):
        x_cuts = _cuts(*self.x_range, low_bits, self.dsp_bits)
        y_cuts = _cuts(*self.y_range, self.dsp_bits, self.dsp_bits)
        order = []
        for k in range(self.count):
            slices = [Slice(k, xo, xw, xs, yo, yw, *product_range((xl, xh), (yl, yh)))
                      for xo, xw, xs, xl, xh in x_cuts for yo, yw, _, yl, yh in y_cuts]
            order += sorted(slices, key=lambda s: -s.offset)
        self.slices = tuple(order)
        self.multipliers = -(-len(order) // self.cycles)
        self.phases = -(-len(order) // self.multipliers)
        order = [None] * (self.phases * self.multipliers - len(order)) + order
        self.table = tuple(tuple(order[p * self.multipliers:(p + 1) * self.multipliers])
                           for p in range(self.phases))

    @property
    def latency(self):
        return self.phases + 1

    # --- hardware ---------------------------------------------------------------------------------

    def counter(self, m, *, enable, start, name):
        """The phase counter: 0 in the cycle after ``start`` (while ``enable``), then 1, 2, ... up
        to ``phases``, where it stays (idle; also its reset value)."""
        phase = Signal(range(self.phases + 1), init=self.phases, name=name)
        with m.If(enable):
            with m.If(start):
                m.d.sync += phase.eq(0)
            with m.Elif(phase != self.phases):
                m.d.sync += phase.eq(phase + 1)
        return phase

    def last(self, mul_phase):
        """Whether the partial products registers hold the last phase (always, with one phase)."""
        return 1 if self.phases == 1 else mul_phase == self.phases - 1

    def multiply(self, m, *, enable, phase, xs, y, name):
        """The partial products stage: ``<name>_part_<j>``, the product of multiplier ``j`` in
        phase ``phase`` (a value from :meth:`counter`; ``None`` with one phase), and
        ``<name>_phase``, the phase they belong to. ``xs`` (``count`` values) and ``y`` must hold
        still over the phases. Returns ``(parts, mul_phase)``."""
        if len(xs) != self.count:
            raise ValueError(f"xs must have {self.count} values, not {len(xs)}")
        parts = []
        for j, column in enumerate(zip(*self.table)):
            a_by, b_by = {}, {}
            for p, s in enumerate(column):
                if s is None:
                    continue
                x = xs[s.product][s.x_off:s.x_off + s.x_width]
                a_by[p] = ((s.product, s.x_off), x.as_signed() if s.x_signed else x)
                b_by[p] = (s.y_off, y[s.y_off:s.y_off + s.y_width])
            lo = min(s.lo for s in column if s is not None)
            hi = max(s.hi for s in column if s is not None)
            part = Signal(QFormat.for_range(lo, hi).shape, name=f"{name}_part_{j}", reset_less=True)
            with m.If(enable):
                m.d.sync += part.eq(_by_phase(phase, a_by) * _by_phase(phase, b_by))
            parts.append(part)
        mul_phase = None
        if self.phases > 1:
            mul_phase = Signal(range(self.phases + 1), init=self.phases, name=f"{name}_phase")
            with m.If(enable):
                m.d.sync += mul_phase.eq(phase)
        return parts, mul_phase

    def registered_multiply(self, m, platform, *, xs, x_enable, y, y_enable, enable, name):
        """The partial products stage of a plan of one phase, with the operand registers inside:
        per multiplier ``j`` a :func:`~leanattn.hdl.dsp.registered_product` ``<name>_part_<j>``
        whose operand registers load their slices of ``xs`` (``count`` values) while ``x_enable``
        and of ``y`` while ``y_enable`` (an enable of ``None``: the slices reach the multiplier
        directly, for operands that are registers already), and whose product register (the part,
        as :meth:`multiply` returns it) loads while ``enable``. On the ECP5 each is a MULT18X18D
        with its own registers (``platform``, as ``elaborate`` got it). Returns the parts, for
        :meth:`accumulate` with ``mul_phase=None``."""
        if self.phases != 1:
            raise ValueError(f"registered_multiply needs a plan of one phase, not {self.phases}")
        if len(xs) != self.count:
            raise ValueError(f"xs must have {self.count} values, not {len(xs)}")
        parts = []
        for j, (s,) in enumerate(zip(*self.table)):
            x = xs[s.product][s.x_off:s.x_off + s.x_width]
            x = x.as_signed() if s.x_signed else x
            parts.append(registered_product(
                m, platform, a=x, a_en=x_enable, b=y[s.y_off:s.y_off + s.y_width], b_en=y_enable,
                p_en=enable, name=f"{name}_part_{j}"))
        return parts

    def accumulate(self, m, *, enable, parts, mul_phase, names):
        """The accumulator stage: one register per product (``names``), complete one cycle after
        the partial products of the last phase. Horner order: in each phase of product ``k`` the
        accumulator is shifted left from the lowest offset so far to the new lowest one, and the
        phase's partial products are added at their offsets above it; its first phase starts
        from 0. Sums wrap at ``product_shape``: the exact product fits, so every partial sum is
        right modulo its width. Returns the accumulators."""
        if len(names) != self.count:
            raise ValueError(f"names must have {self.count} names, not {len(names)}")
        accs = []
        for k, acc_name in enumerate(names):
            acc = Signal(self.product_shape, name=acc_name, reset_less=True)
            acc_by, part_by = {}, [{} for _ in parts]
            base = None
            for p, row in enumerate(self.table):
                mine = {j: s for j, s in enumerate(row) if s is not None and s.product == k}
                if not mine:
                    continue
                low = min(s.offset for s in mine.values())
                if base is None:
                    acc_by[p] = (("zero",), 0)
                else:
                    acc_by[p] = (("acc", base - low), acc << (base - low))
                base = low
                for j in range(len(parts)):
                    if j in mine:
                        shift = mine[j].offset - low
                        part_by[j][p] = (("part", shift), parts[j] << shift)
                    else:
                        part_by[j][p] = (("zero",), 0)
            total = _by_phase(mul_phase, acc_by)
            for choices in part_by:
                if choices and any(key != ("zero",) for key, _ in choices.values()):
                    total = total + _by_phase(mul_phase, choices)
            # Phases without a partial product of k (and the idle one) leave its accumulator be.
            when = enable
            if self.phases > 1 and len(acc_by) == self.phases:
                when = enable & (mul_phase != self.phases)
            elif self.phases > 1:
                hit = [mul_phase == p for p in acc_by]
                for term in hit[1:]:
                    hit[0] = hit[0] | term
                when = enable & hit[0]
            with m.If(when):
                m.d.sync += acc.eq(total)
            accs.append(acc)
        return accs
