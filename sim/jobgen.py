"""Random integer jobs for tests and benches: any lengths, random inputs, a chosen logit spread."""

import numpy as np

from .job import Job

__all__ = ["int_job", "random_int_job"]


def int_job(cfg, q, k, v, lengths, score_mant, score_shift, out_mant=None, out_shift=None):
    """A job from integer arrays and explicit descriptor fields (flattened heads, one batch).

    The output scale defaults to a gain of 64 (``out_mant * 2**-out_shift``)."""
    h = len(lengths)
    out_mant = np.full(h, 1 << (cfg.scale_bits - 1)) if out_mant is None else out_mant
    out_shift = np.full(h, cfg.scale_bits - 1 - 6) if out_shift is None else out_shift
    one = np.ones((1, h))
    per_head = lambda x: np.broadcast_to(np.asarray(x, dtype=np.int64), (h,)).copy()
    return Job(1, h, np.asarray(q), np.asarray(k), np.asarray(v), np.asarray(lengths, dtype=np.int64),
               one, one, one, one.copy(), per_head(score_mant), per_head(score_shift), per_head(out_mant),
               per_head(out_shift))


def random_int_job(cfg, lengths, rng, spread_bits=2):
    """Uniform random q, k, v over the input range; the score scale puts the logits within about
    ``±2**spread_bits``."""
    h, n_max, d = len(lengths), max(lengths), cfg.head_dim
    lo, hi = cfg.input_min, cfg.input_max + 1
    q = rng.integers(lo, hi, (h, d))
    k = rng.integers(lo, hi, (h, n_max, d))
    v = rng.integers(lo, hi, (h, n_max, d))
    typical = np.sqrt(d) * cfg.input_max ** 2 / 3
    mant = 1 << (cfg.scale_bits - 1)
    shift = int(np.clip(np.log2(typical * mant) - spread_bits - cfg.logit_frac_bits, 0,
                        cfg.score_shift_max))
    return int_job(cfg, q, k, v, lengths, mant, shift)
