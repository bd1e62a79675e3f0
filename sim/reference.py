"""Float64 reference attention and the error measures used to judge the datapath.

The datapath is judged against the **quantization floor**: exact float64 attention on the same
quantized integers (dequantized with the exact scales), so that input quantization is never blamed
on the datapath. End-to-end error compares with float64 attention on the float inputs.
"""

import numpy as np

__all__ = ["attention", "rel_l2", "REL_L2_FLOOR"]

#: Denominator floor of the relative L2 error, in output units per element (an output of about
#: 0.05 rms): near-zero output vectors would otherwise dominate the tail.
REL_L2_FLOOR = 0.05


def attention(q, k, v, lengths):
    """``softmax(q . k^T / sqrt(d)) . v`` per head, float64: ``q`` ``(h, d)``, ``k``/``v``
    ``(h, n_max, d)``, ``lengths`` ``(h,)``; only the first ``lengths[h]`` keys count."""
    q = np.asarray(q, dtype=np.float64)
    out = np.empty(q.shape, dtype=np.float64)
    scale = 1.0 / np.sqrt(q.shape[-1])
    for h in range(q.shape[0]):
        n = int(lengths[h])
        s = (np.asarray(k[h, :n], dtype=np.float64) @ q[h]) * scale
        p = np.exp(s - s.max())
        out[h] = (p @ np.asarray(v[h, :n], dtype=np.float64)) / p.sum()
    return out


def rel_l2(out, ref, floor=REL_L2_FLOOR):
    """Relative L2 error per head: ``|out - ref| / max(|ref|, floor * sqrt(d))``."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.maximum(np.linalg.norm(ref, axis=-1), floor * np.sqrt(ref.shape[-1]))
    return np.linalg.norm(out - ref, axis=-1) / denom
