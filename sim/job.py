"""Decode jobs: the user's arrays in, validated and quantized, and the results out.

A job file (``.npz``) holds ``q`` ``(B, H, d)``, ``k`` and ``v`` ``(B, H, Nmax, d)`` and ``lengths``
``(B, H)`` (``1 <= n <= Nmax``). Float arrays (float16/32/64) are quantized here (see
:mod:`leanattn.sim.quant`), per tensor or per head as the configuration says; integer arrays are
taken as already quantized and need ``q_scale``/``k_scale``/``v_scale`` (scalars or ``(B, H)``). An
optional ``out_scale`` (scalar or ``(B, H)``) asks for an output scale; by default each head's output
uses the full output range for the largest |v| of that head. Heads are flattened b-major
(``b * H + h``). Every problem with a job raises :class:`JobError` with a message naming the array,
the rule and the value.
"""

import math
import zipfile
from dataclasses import dataclass

import numpy as np
from numpy.lib.npyio import NpzFile

from .quant import decode_scale, encode_scale, quant_scale, quantize, score_scale_value

__all__ = ["JobError", "Job", "load_job", "save_result"]

FLOAT_KINDS = ("float16", "float32", "float64")


class JobError(ValueError):
    """A job that the datapath cannot run: missing or malformed arrays, bad lengths or scales."""


@dataclass
class Job:
    """A validated, quantized job with its per-head descriptor constants (flattened heads).

    Members
    -------
    batch, heads : int             B and H.
    q : int64 ``(B*H, d)``         k, v : int ``(B*H, Nmax, d)``        lengths : int64 ``(B*H,)``
    q_scale, k_scale, v_scale :    float64, ``()`` per tensor or ``(B, H)`` per head.
    out_scale : float64 ``(B, H)`` the output scale the encoded constants realize.
    score_mant, score_shift, out_mant, out_shift : int64 ``(B*H,)``  hardware descriptor fields.
    """
    batch:       int
    heads:       int
    q:           np.ndarray
    k:           np.ndarray
    v:           np.ndarray
    lengths:     np.ndarray
    q_scale:     np.ndarray
    k_scale:     np.ndarray
    v_scale:     np.ndarray
    out_scale:   np.ndarray
    score_mant:  np.ndarray
    score_shift: np.ndarray
    out_mant:    np.ndarray
    out_shift:   np.ndarray

    @property
    def flat_heads(self):
        return self.batch * self.heads

    def head_scales(self, name):
        """A scale (``q``, ``k``, ``v`` or ``out``) for every flattened head: ``(B*H,)``."""
        scale = getattr(self, f"{name}_scale")
        return np.broadcast_to(scale, (self.batch, self.heads)).reshape(-1)

    def dequantized(self):
        """Float64 ``q, k, v`` of the quantized integers (flattened heads): the quantization floor's
        inputs."""
        flat = self.flat_heads
        return (self.q * self.head_scales("q")[:, None],
                self.k * self.head_scales("k").reshape(flat, 1, 1),
                self.v * self.head_scales("v").reshape(flat, 1, 1))

    @classmethod
    def from_arrays(cls, cfg, *, q, k, v, lengths, q_scale=None, k_scale=None, v_scale=None,
                    out_scale=None):
        """Validate and quantize a job's arrays for ``cfg``; raises :class:`JobError`."""
        q, k, v, lengths = _check_shapes(cfg, q, k, v, lengths)
        batch, heads, n_max, _ = k.shape
        flat = batch * heads
        lengths = lengths.reshape(flat)
        q, k, v = q.reshape(flat, -1), k.reshape(flat, n_max, -1), v.reshape(flat, n_max, -1)
        q, q_scale = _prepare(cfg, "q", q, None, q_scale, batch, heads)
        k, k_scale = _prepare(cfg, "k", k, lengths, k_scale, batch, heads)
        v, v_scale = _prepare(cfg, "v", v, lengths, v_scale, batch, heads)
        job = cls(batch, heads, q, k, v, lengths.astype(np.int64), q_scale, k_scale, v_scale,
                  *(np.zeros(0),) * 5)
        job._encode_scales(cfg, out_scale)
        return job

    def _encode_scales(self, cfg, out_scale):
        flat = self.flat_heads
        with np.errstate(over="ignore"):           # overflows are reported below
            score = score_scale_value(self.head_scales("q"), self.head_scales("k"), cfg.head_dim)
        if not np.all(np.isfinite(score)):
            h = int(np.flatnonzero(~np.isfinite(score))[0])
            raise JobError(f"the score scale of head {h} (q_scale * k_scale * log2(e) / sqrt(d)) "
                           f"overflows float64")
        pairs = [encode_scale(math.ldexp(c, cfg.logit_frac_bits), mant_bits=cfg.scale_bits,
                              shift_max=cfg.score_shift_max) for c in score]
        self.score_mant, self.score_shift = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
        v_scale = self.head_scales("v")
        if out_scale is None:
            # The largest |v| of the head maps to output_max: s_v / out_scale = output_max / v_max.
            v_max = np.array([np.abs(self.v[h, :self.lengths[h]].astype(np.int64)).max()
                              for h in range(flat)])
            ratio = cfg.output_max / np.maximum(v_max, 1).astype(np.float64)
            ratio[v_max == 0] = 1.0
            wanted = v_scale / ratio
        else:
            wanted = _scale_array("out_scale", out_scale, self.batch, self.heads).reshape(-1)
            wanted = np.broadcast_to(wanted, (flat,))
            with np.errstate(over="ignore"):
                ratio = v_scale / wanted
            if not np.all(np.isfinite(ratio)):
                h = int(np.flatnonzero(~np.isfinite(ratio))[0])
                raise JobError(f"v_scale / out_scale of head {h} ({v_scale[h]:g} / {wanted[h]:g}) "
                               f"overflows float64")
        pairs = [encode_scale(r, mant_bits=cfg.scale_bits, shift_max=cfg.out_shift_max)
                 for r in ratio]
        self.out_mant, self.out_shift = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
        if np.any(self.out_mant == 0):
            h = int(np.flatnonzero(self.out_mant == 0)[0])
            raise JobError(f"out_scale of head {h} ({wanted[h]:g}) is too large for v_scale "
                           f"{v_scale[h]:g}: every output would round to 0")
        with np.errstate(over="ignore"):
            realized = v_scale / decode_scale(self.out_mant, self.out_shift)
        if not np.all(np.isfinite(realized)):
            h = int(np.flatnonzero(~np.isfinite(realized))[0])
            raise JobError(f"the output scale of head {h} (v_scale {v_scale[h]:g} over the largest "
                           f"output factor) overflows float64")
        self.out_scale = realized.reshape(self.batch, self.heads)


# -- validation and quantization -------------------------------------------------------------------

def _check_shapes(cfg, q, k, v, lengths):
    arrays = {"q": q, "k": k, "v": v, "lengths": lengths}
    for name, array in arrays.items():
        if array is None:
            raise JobError(f"the job has no array '{name}'")
        array = np.asarray(array)
        if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and array.dtype.name
                                             not in FLOAT_KINDS):
            raise JobError(f"'{name}' must hold integers or float16/32/64, not {array.dtype}")
        arrays[name] = array
    q, k, v, lengths = arrays.values()
    for name, array, ndim, shape in (("q", q, 3, "(B, H, d)"), ("k", k, 4, "(B, H, Nmax, d)"),
                                     ("v", v, 4, "(B, H, Nmax, d)"), ("lengths", lengths, 2, "(B, H)")):
        if array.ndim != ndim:
            raise JobError(f"'{name}' must have shape {shape}, not {array.shape}")
    batch, heads, d = q.shape
    if min(batch, heads) < 1 or k.shape[2] < 1:
        raise JobError(f"the job must have at least one head and one key, not q {q.shape}, "
                       f"k {k.shape}")
    if d != cfg.head_dim:
        raise JobError(f"'q' has head_dim {d} but the configuration has head_dim {cfg.head_dim}")
    if k.shape != (batch, heads, k.shape[2], d):
        raise JobError(f"'k' must have shape (B, H, Nmax, d) = ({batch}, {heads}, Nmax, {d}), "
                       f"not {k.shape}")
    if v.shape != k.shape:
        raise JobError(f"'v' must have the shape of 'k' {k.shape}, not {v.shape}")
    if lengths.shape != (batch, heads):
        raise JobError(f"'lengths' must have shape (B, H) = ({batch}, {heads}), not {lengths.shape}")
    if lengths.dtype.kind not in "iu":
        raise JobError(f"'lengths' must hold integers, not {lengths.dtype}")
    if batch * heads > cfg.max_heads:
        raise JobError(f"the job has {batch * heads} heads (B*H) but max_heads is {cfg.max_heads}")
    n_max = k.shape[2]
    for index in np.ndindex(lengths.shape):
        n = int(lengths[index])
        if not 1 <= n <= n_max:
            raise JobError(f"lengths{list(index)} must be in 1..Nmax ({n_max}), not {n}")
        if n > cfg.max_context:
            raise JobError(f"lengths{list(index)} must be at most max_context ({cfg.max_context}), "
                           f"not {n}")
    return q, k, v, lengths


def _scale_array(name, scale, batch, heads):
    scale = np.asarray(scale, dtype=np.float64) if np.asarray(scale).dtype.kind in "iuf" else None
    if scale is None or scale.shape not in ((), (batch, heads)):
        raise JobError(f"'{name}' must be a number or an array of shape (B, H) = ({batch}, {heads})")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise JobError(f"'{name}' must be finite and positive, not {scale.min() if scale.size else scale}")
    return scale


def _valid_rows(x, lengths):
    """The valid part of every flattened head: ``x[h]`` or ``x[h, :n]``."""
    for h in range(x.shape[0]):
        yield h, (x[h] if lengths is None else x[h, :lengths[h]])


def _valid_mask(x, lengths):
    """True on the valid positions of ``x`` (broadcastable to it): all of q, keys ``< n`` of k, v."""
    if lengths is None:
        return np.ones((1,) * x.ndim, dtype=bool)
    return (np.arange(x.shape[1])[None, :] < lengths[:, None])[:, :, None]


def _int_dtype(bits):
    return np.int16 if bits <= 16 else np.int64


def _prepare(cfg, name, x, lengths, scale, batch, heads):
    """Integers of one tensor and the scale(s) used: quantize floats, range-check integers.

    Padding (keys at or after a head's length) does not count and is returned as 0, whatever it held
    (NaN, huge values, out-of-range integers).
    """
    bits = cfg.input_bits
    valid = _valid_mask(x, lengths)
    if x.dtype.kind == "f":
        if scale is not None:
            raise JobError(f"'{name}' holds floats, so the job must not give '{name}_scale' "
                           f"(the tool chooses it)")
        abs_max = np.zeros(batch * heads)
        for h, rows in _valid_rows(x, lengths):
            rows = rows.astype(np.float64)
            if not np.all(np.isfinite(rows)):
                raise JobError(f"'{name}' holds NaN or infinity in head {h} (flattened b*H + h)")
            abs_max[h] = np.abs(rows).max()
        if cfg.quant == "per_tensor":
            used = quant_scale(abs_max.max(), bits)
            per_head = np.broadcast_to(used, abs_max.shape)
        else:
            used = quant_scale(abs_max, bits).reshape(batch, heads)
            per_head = used.reshape(-1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        ints = quantize(np.where(valid, x, 0), per_head.reshape(shape), bits)
        return ints.astype(_int_dtype(bits)), np.asarray(used, dtype=np.float64)
    if scale is None:
        raise JobError(f"'{name}' holds integers, so the job must give '{name}_scale' "
                       f"(a number or (B, H))")
    used = _scale_array(f"{name}_scale", scale, batch, heads)
    lo, hi = cfg.input_min, cfg.input_max
    for h, rows in _valid_rows(x, lengths):
        if rows.min() < lo or rows.max() > hi:
            raise JobError(f"'{name}' must fit input_bits ({bits}): values in {lo}..{hi}, but head "
                           f"{h} holds {int(rows.min())}..{int(rows.max())}")
    return np.where(valid, x, 0).astype(_int_dtype(bits)), used


# -- files ---------------------------------------------------------------------------------------

def load_job(path, cfg):
    """Read and validate a job file for ``cfg``; raises :class:`JobError` on any problem."""
    try:
        with open(path, "rb") as file:            # np.load leaks its own handle on a bad zip
            data = np.load(file, allow_pickle=False)
            if not isinstance(data, NpzFile):
                raise ValueError("it holds a single array, not named arrays")
            with data:
                arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise JobError(f"no job file at {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise JobError(f"{path} is not a readable .npz job file ({error or type(error).__name__})") \
            from None
    known = ("q", "k", "v", "lengths", "q_scale", "k_scale", "v_scale", "out_scale")
    return Job.from_arrays(cfg, **{name: arrays.get(name) for name in known})


def save_result(path, cfg, job, out_int, **extra):
    """Write ``out`` (float64), ``out_int``, the scales used and the config as JSON text."""
    shape = (job.batch, job.heads, cfg.head_dim)
    out_int = np.asarray(out_int, dtype=np.int64).reshape(shape)
    with open(path, "wb") as file:             # exactly this path: np.savez would append .npz
        np.savez(
            file,
            out=out_int * job.out_scale[:, :, None],
            out_int=out_int,
            out_scale=job.out_scale,
            q_scale=job.q_scale, k_scale=job.k_scale, v_scale=job.v_scale,
            score_mant=job.score_mant.reshape(shape[:2]),
            score_shift=job.score_shift.reshape(shape[:2]),
            out_mant=job.out_mant.reshape(shape[:2]), out_shift=job.out_shift.reshape(shape[:2]),
            config=np.array(cfg.to_json()),
            **extra,
        )
