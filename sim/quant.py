"""Host-side quantization and the encoding of the per-head runtime scales.

Symmetric quantization: ``scale = max|x| / (2**(bits-1) - 1)`` (1 where ``max|x| == 0``) and
``x_int = rint(x / scale)`` (half to even), over the valid positions only.

The hardware sees two runtime constants per head, each as an unsigned mantissa of ``scale_bits``
bits and a right shift:

* score scale: ``mant * 2**-(shift + logit_frac_bits) ~= s_q * s_k * log2(e) / sqrt(d)``;
* output scale: ``out_mant * 2**-out_shift ~= s_v / out_scale``, so that
  ``out_int ~= (o / l) * out_mant * 2**-out_shift`` and ``out = out_int * out_scale``.

The mantissas are normalized (top bit set) wherever the shift range allows; the output scale that
is reported is the one the encoded constant really realizes, so dequantized outputs carry no
encoding error.
"""

import math

import numpy as np

__all__ = ["quant_scale", "quantize", "encode_scale", "decode_scale", "score_scale_value"]

LOG2_E = 1.0 / math.log(2.0)


def quant_scale(abs_max, bits):
    """Symmetric scale(s) for a maximum magnitude (array or scalar): 1 where the maximum is 0.

    Also 1 where the quotient underflows to 0 (a maximum in the lowest subnormals), so that a scale
    is always positive: such a tensor quantizes to zeros either way.
    """
    abs_max = np.asarray(abs_max, dtype=np.float64)
    scale = abs_max / ((1 << (bits - 1)) - 1)
    return np.where(scale > 0, scale, 1.0)


def quantize(x, scale, bits):
    """``rint(x / scale)`` (half to even) as int64, clipped to the symmetric range for safety."""
    top = (1 << (bits - 1)) - 1
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), -top, top).astype(np.int64)


def encode_scale(value, *, mant_bits, shift_max):
    """``(mant, shift)`` with ``mant * 2**-shift ~= value`` (``value >= 0`` finite, float).

    Normal case: ``mant`` in ``[2**(mant_bits-1), 2**mant_bits)``, rounded to nearest (half to
    even). Values too large for ``shift >= 0`` saturate the mantissa at shift 0; values too small
    for ``shift <= shift_max`` get a smaller mantissa at ``shift_max`` (possibly 0).
    """
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"a scale must be finite and non-negative, not {value}")
    top = (1 << mant_bits) - 1
    if value == 0.0:
        return 0, 0
    frac, exp = math.frexp(value)                  # value = frac * 2**exp, frac in [0.5, 1)
    shift = mant_bits - exp
    mant = round(math.ldexp(frac, mant_bits))
    if mant > top:                                 # rounded up to 2**mant_bits
        mant, shift = mant >> 1, shift - 1
    if shift < 0:
        return min(top, round(value)), 0
    if shift > shift_max:
        return round(math.ldexp(value, shift_max)), shift_max
    return mant, shift


def decode_scale(mant, shift):
    """The value ``mant * 2**-shift`` an encoded scale realizes (float64, array or scalar)."""
    return np.ldexp(np.asarray(mant, dtype=np.float64), -np.asarray(shift, dtype=np.int64))


def score_scale_value(q_scale, k_scale, head_dim):
    """The real base-2 score scale ``s_q * s_k * log2(e) / sqrt(head_dim)``."""
    return np.asarray(q_scale, dtype=np.float64) * np.asarray(k_scale, dtype=np.float64) \
        * (LOG2_E / math.sqrt(head_dim))
