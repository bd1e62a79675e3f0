"""The host driver of the board: a job over the UART, its outputs and status back.

:func:`run_job` checks that the board runs the same configuration (the INFO record), packs the job's
K and V into the board's banks (:func:`leanattn.sim.packer.pack_kv`), encodes it
(:mod:`leanattn.fpga.protocol`), sends it and decodes the OUTPUT frames and the STATUS record. Its
output array equals :func:`leanattn.sim.golden.run`'s integer output for the job.

A ``transport`` is anything with ``write(bytes)`` and ``read(n)``: a pyserial ``Serial`` (whose
``read`` returns fewer bytes, or none, when its timeout passes) or a simulation bridge. The pieces
are public so that a bench can use exactly the bytes the driver sends and decode exactly what the
board answers: :func:`encode_job`, :func:`job_reply_bytes`, :class:`ReplyReader`,
:func:`collect_outputs`.

``leanattn board --port /dev/ttyUSB0 JOB.npz -o OUT.npz --preset tiny`` runs a job file on a
board (:func:`add_parser`, :func:`run`).
"""

import time

import numpy as np

from ..hdl.config import AttentionConfig
from ..hdl.jobload import ERR_NONE
from ..sim.packer import pack_kv
from .protocol import (
    HEADER_BYTES,
    PROTOCOL_VERSION,
    Command,
    ErrorCode,
    FrameDecoder,
    Malformed,
    Reply,
    config_crc,
    decode_error,
    decode_info,
    decode_status,
    encode_command,
    encode_descriptors,
    encode_kv_writes,
    encode_queries,
    payload_bytes,
    reply_layouts,
    unpack,
)

__all__ = [
    "BoardError", "JobMismatch", "job_descriptors", "job_query_beats", "encode_job", "job_reply_bytes",
    "ReplyReader", "collect_outputs", "check_info", "read_info", "run_job", "add_parser", "run",
]


class BoardError(RuntimeError):
    """The board did not answer as the protocol says (silence, an ERROR reply, a broken frame)."""


class JobMismatch(ValueError):
    """A job that this board cannot run: wrong shapes, too long, too big for its banks."""


def _check_job(cfg, job):
    lengths = np.asarray(job.lengths).reshape(-1)
    heads = len(lengths)
    if not 1 <= heads <= cfg.max_heads:
        raise JobMismatch(f"the job has {heads} heads; the board takes 1..{cfg.max_heads} (max_heads)")
    q = np.asarray(job.q)
    if q.shape != (heads, cfg.head_dim):
        raise JobMismatch(f"q must have the shape (heads, head_dim) = ({heads}, {cfg.head_dim}), "
                          f"not {q.shape}")
    for name in ("k", "v"):
        x = np.asarray(getattr(job, name))
        if x.ndim != 3 or x.shape[0] != heads or x.shape[2] != cfg.head_dim:
            raise JobMismatch(f"{name} must have the shape (heads, n_max, head_dim) = ({heads}, n_max, "
                              f"{cfg.head_dim}), not {x.shape}")
    for name in ("score_mant", "score_shift", "out_mant", "out_shift"):
        if np.asarray(getattr(job, name)).reshape(-1).shape != (heads,):
            raise JobMismatch(f"{name} must hold one value per head ({heads})")
    bad = [(h, int(n)) for h, n in enumerate(lengths) if not 1 <= n <= cfg.max_context]
    if bad:
        raise JobMismatch(f"the length of head {bad[0][0]} must be in the range 1..{cfg.max_context} "
                          f"(max_context), not {bad[0][1]}")


def job_descriptors(cfg, job, packed):
    """The descriptors of ``job`` with the K/V bases of ``packed``, ``last`` on the final head."""
    heads = len(job.lengths)
    return [{"length": int(job.lengths[h]), "k_base": packed.k_base[h], "v_base": packed.v_base[h],
             "score_mant": int(job.score_mant[h]), "score_shift": int(job.score_shift[h]),
             "out_mant": int(job.out_mant[h]), "out_shift": int(job.out_shift[h]),
             "last": int(h == heads - 1)}
            for h in range(heads)]


def job_query_beats(cfg, job):
    """The query beats of ``job``: ``head_dim // lanes`` per head, ``last`` on the final one."""
    beats = np.asarray(job.q, dtype=np.int64).reshape(-1, cfg.lanes)
    return [{"q": [int(x) for x in row], "last": int(i == len(beats) - 1)} for i, row in enumerate(beats)]


def encode_job(cfg, job, *, bank_keys):
    """The bytes of one job: its KV load (KV_WRITE and KV_DATA frames), then its descriptors and its
    query beats. Raises :class:`JobMismatch` naming the problem when the job does not fit."""
    _check_job(cfg, job)
    try:
        packed = pack_kv(cfg, job.lengths, job.k, job.v, bank_keys=bank_keys)
    except ValueError as error:
        raise JobMismatch(f"the job does not fit the board's KV memory: {error}") from None
    return (encode_kv_writes(cfg, packed.writes())
            + encode_descriptors(cfg, job_descriptors(cfg, job, packed))
            + encode_queries(cfg, job_query_beats(cfg, job)))


def job_reply_bytes(cfg, heads):
    """Bytes the board sends for a job of ``heads`` heads: one OUTPUT frame per head (none for a
    rejected job: pass 0), then the STATUS frame."""
    layouts = reply_layouts(cfg)
    output = HEADER_BYTES + cfg.beats_per_key * payload_bytes(layouts[Reply.OUTPUT])
    return heads * output + HEADER_BYTES + payload_bytes(layouts[Reply.STATUS])


class ReplyReader:
    """Frames from the board, read from a transport; it never reads past the frame it returns.

    Parameters
    ----------
    transport : object with ``read(n)``
    cfg : AttentionConfig
    timeout : float
        Seconds without a byte after which :meth:`frame` raises :class:`BoardError`.
    """

    def __init__(self, transport, cfg, *, timeout=10.0):
        self._transport = transport
        self._timeout = timeout
        self._decoder = FrameDecoder(reply_layouts(cfg))
        self._frames = []

    def frame(self):
        """The next whole frame; malformed bytes raise :class:`BoardError`."""
        deadline = time.monotonic() + self._timeout
        while not self._frames:
            chunk = self._transport.read(self._decoder.needed)
            if chunk:
                deadline = time.monotonic() + self._timeout
                for event in self._decoder.feed(chunk):
                    if isinstance(event, Malformed):
                        raise BoardError(f"a malformed reply from the board: {ErrorCode(event.code).name} "
                                         f"(byte {event.byte:#04x})")
                    self._frames.append(event)
            elif time.monotonic() > deadline:
                raise BoardError(f"no reply from the board for {self._timeout} s")
        return self._frames.pop(0)


def collect_outputs(cfg, heads, frames):
    """The output integers ``(heads, head_dim)`` of a job from its OUTPUT frames (each head exactly
    once, its beats in order, ``last`` on the final one); :class:`BoardError` otherwise."""
    layout = reply_layouts(cfg)[Reply.OUTPUT]
    out = np.zeros((heads, cfg.head_dim), dtype=np.int64)
    seen = set()
    for frame in frames:
        beats = [unpack(layout, bits) for bits in frame.payloads]
        head = beats[0]["head"] if beats else None
        if len(beats) != cfg.beats_per_key or any(b["head"] != head for b in beats) \
                or [b["last"] for b in beats] != [0] * (len(beats) - 1) + [1]:
            raise BoardError(f"a malformed OUTPUT frame: {len(beats)} beats, heads "
                             f"{sorted({b['head'] for b in beats})}, last {[b['last'] for b in beats]}")
        if head >= heads or head in seen:
            why = "already done" if head in seen else "not in the job"
            raise BoardError(f"an OUTPUT frame for head {head}, which is {why}")
        seen.add(head)
        out[head] = np.concatenate([b["out"] for b in beats])
    return out, seen


def check_info(cfg, info):
    """Raise :class:`BoardError` unless the INFO record ``info`` says the board runs ``cfg``."""
    if info.version != PROTOCOL_VERSION:
        raise BoardError(f"the board speaks protocol version {info.version}, this driver {PROTOCOL_VERSION}")
    if info.config_crc != config_crc(cfg):
        raise BoardError(f"the board runs a different configuration (cores {info.cores}, lanes "
                         f"{info.lanes}, head_dim {info.head_dim}, max_heads {info.max_heads}, max_context "
                         f"{info.max_context}; config CRC {info.config_crc:#010x}, expected "
                         f"{config_crc(cfg):#010x})")


def read_info(transport, cfg, *, timeout=10.0):
    """Ask for the INFO record (frames from before are skipped) and check it against ``cfg``."""
    transport.write(encode_command(Command.INFO))
    reader = ReplyReader(transport, cfg, timeout=timeout)
    while True:
        frame = reader.frame()
        if frame.opcode == Reply.INFO:
            info = decode_info(frame.payloads[0])
            check_info(cfg, info)
            return info


def run_job(transport, cfg, job, *, bank_keys=None, timeout=10.0):
    """Run ``job`` (a :class:`leanattn.sim.job.Job`, heads flattened) on the board behind
    ``transport``; return ``(out, status)``: the output integers ``(heads, head_dim)`` (zeros if
    the board rejected the job: see ``status.error``) and the :class:`~leanattn.fpga.protocol.Status`.

    ``bank_keys`` defaults to the board's (read from its INFO record, which also checks the
    configuration). Raises :class:`JobMismatch` before sending anything when the job does not fit,
    :class:`BoardError` when the board does not answer as it should.
    """
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    _check_job(cfg, job)
    if bank_keys is None:
        bank_keys = read_info(transport, cfg, timeout=timeout).bank_keys
    payload = encode_job(cfg, job, bank_keys=bank_keys)
    transport.write(payload)
    heads = len(job.lengths)
    reader = ReplyReader(transport, cfg, timeout=timeout)
    outputs = []
    while True:
        frame = reader.frame()
        if frame.opcode == Reply.OUTPUT:
            outputs.append(frame)
        elif frame.opcode == Reply.ERROR:
            error = decode_error(frame.payloads[0])
            raise BoardError(f"the board reported malformed input: {ErrorCode(error.code).name} "
                             f"(byte {error.byte:#04x})")
        elif frame.opcode == Reply.STATUS:
            status = decode_status(cfg, frame.payloads[0])
            break
    out, seen = collect_outputs(cfg, heads, outputs)
    if status.error == ERR_NONE and len(seen) != heads:
        raise BoardError(f"the job ended with outputs for {len(seen)} of its {heads} heads")
    return out, status


# --- command line ------------------------------------------------------------------------------------

def add_parser(subparsers):
    """Add ``leanattn board`` to the ``leanattn`` command line's subparsers."""
    from ..cli import config_args

    p = subparsers.add_parser("board", help="run a job file on the accelerator on an FPGA board (UART) "
                              "and compare it with the golden model")
    p.add_argument("job", metavar="JOB.npz")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="the UART's rate (default 115200)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up when the board is silent this long (default 30)")
    config_args(p)
    p.set_defaults(func=run)
    return p


def run(args):
    """``leanattn board``: writes the arrays ``leanattn golden`` writes plus ``cycles`` and
    ``ideal_cycles``, and prints whether the board's outputs equal the golden model's."""
    from ..cli import UsageError, _cfg_name, _save, load_config
    from ..sim import golden
    from ..sim.job import JobError, load_job, save_result
    from ..sim.reference import attention, rel_l2
    from ..sim.system import ideal_cycles

    cfg = load_config(args.preset, args.config, args.overrides)
    try:
        job = load_job(args.job, cfg)
    except JobError as error:
        raise UsageError(str(error)) from None
    try:
        import serial
    except ImportError:
        raise UsageError("pyserial is not installed: pip install pyserial") from None
    start = time.perf_counter()
    try:
        with serial.Serial(args.port, args.baud, timeout=0.1) as port:
            out, status = run_job(port, cfg, job, timeout=args.timeout)
    except serial.SerialException as error:
        raise UsageError(f"cannot use the serial port {args.port}: {error}") from None
    except (JobMismatch, BoardError) as error:
        raise UsageError(str(error)) from None
    elapsed = time.perf_counter() - start
    if status.error != ERR_NONE:
        raise UsageError(f"the board rejected the job with error code {status.error}")
    ideal = ideal_cycles(cfg, job.lengths)
    _save(args.output,
          lambda path: save_result(path, cfg, job, out, cycles=status.cycles, ideal_cycles=ideal))
    expected = golden.run(cfg, job).out
    same = np.array_equal(out, expected)
    print(f"leanattn board: {args.port} at {args.baud} baud, {_cfg_name(args)}: {job.flat_heads} heads, "
          f"{int(job.lengths.sum())} keys -> {args.output} ({elapsed:.1f} s)")
    print("bit-exact with the golden model: " + ("yes" if same else f"NO ({int(np.sum(out != expected))} "
                                                  "outputs differ)"))
    err = rel_l2(out * job.head_scales("out")[:, None], attention(*job.dequantized(), job.lengths))
    print(f"error vs float64 on the quantized inputs (relative L2 per head): median {np.median(err):.2e}, "
          f"max {err.max():.2e}")
    flags = (", KV memory error" if status.mem_error else "") + (", UART error" if status.link_error else "")
    efficiency = ideal / max(status.cycles, 1)
    print(f"cycles: {status.cycles} (ideal {ideal:.0f}, efficiency {efficiency:.3f}){flags}")
    return 0 if same else 1
