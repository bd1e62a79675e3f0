"""A demo decode job: several sequences and heads with ragged contexts and varied score ranges."""

import numpy as np

__all__ = ["demo_job"]


def demo_job(cfg, *, seed=1, batch=2, heads=4, longest=3000):
    """Float32 job arrays for ``cfg``: ``batch x heads`` heads (capped at ``max_heads``) with
    lengths up to ``min(longest, max_context)``; some heads peaked, some flat."""
    rng = np.random.default_rng(seed)
    batch = max(1, min(batch, cfg.max_heads))
    heads = max(1, min(heads, cfg.max_heads // batch))
    n_max = min(longest, cfg.max_context)
    lengths = rng.integers(max(1, n_max // 8), n_max + 1, size=(batch, heads))
    lengths.flat[0] = n_max
    d = cfg.head_dim
    sharpness = rng.uniform(0.5, 3.0, size=(batch, heads, 1))          # scales the score range
    q = (rng.standard_normal((batch, heads, d)) * sharpness).astype(np.float32)
    k = rng.standard_normal((batch, heads, n_max, d)).astype(np.float32)
    v = rng.standard_normal((batch, heads, n_max, d)).astype(np.float32)
    valid = np.arange(n_max)[None, None, :] < lengths[:, :, None]
    k *= valid[..., None]
    v *= valid[..., None]
    return {"q": q, "k": k, "v": v, "lengths": lengths}
