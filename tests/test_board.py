# amaranth: UnusedElaboratable=no
"""The board top end to end over its UART pins: the generated Verilog on Icarus Verilog and
Verilator, a host script made with the driver's own encoder played into ``rx``, the bytes on
``tx`` decoded with the driver's own decoder. Outputs bit-exact with the golden model, the STATUS
records (error code, cycles, job count), a rejected job followed by an exact one, malformed input
answered and recovered from, a job abandoned half way and a RESET; the driver's ``run_job``
replayed on the recorded bytes; lint; and the amaranth-boards platforms (iCEBreaker, ULX3S)
elaborated with their PLLs, SPRAMs and LEDs."""

import numpy as np
import pytest

from leanattn.fpga import protocol as P
from leanattn.fpga.board import BRAM_BANK_KEYS, BoardTop, _divisor
from leanattn.fpga.host import (
    BoardError,
    JobMismatch,
    ReplyReader,
    collect_outputs,
    encode_job,
    job_descriptors,
    job_query_beats,
    job_reply_bytes,
    run_job,
)
from leanattn.fpga.pll import ecp5_pll_params, ice40_pll_params
from leanattn.hdl.jobload import ERR_LENGTH, ERR_NONE
from leanattn.hdl.normalize import Normalizer
from leanattn.sim import golden
from leanattn.sim.board_bench import HostScript, run_board
from leanattn.sim.cocotb_util import (
    AMARANTH_LINT_WAIVERS,
    HIERARCHY_LINT_WAIVERS,
    design_verilog,
    verilator_lint,
)
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.packer import pack_kv
from leanattn.sim.stream_bench import bench_dir

DIVISOR = 4
TIMEOUT_BYTES = 4       # a short parser timeout keeps the malformed-input part of the script fast
INFO_BYTES = P.HEADER_BYTES + P.payload_bytes(P.info_layout())
ERROR_BYTES = P.HEADER_BYTES + P.payload_bytes(P.error_layout())


def status_bytes(cfg):
    return P.HEADER_BYTES + P.payload_bytes(P.status_layout(cfg))


def bad_job_bytes(cfg):
    """A job of one head longer than max_context (no KV load: it is rejected before any read)."""
    desc = {"length": cfg.max_context + 1, "score_mant": 1, "out_mant": 1, "last": 1}
    beats = [{"q": [1] * cfg.lanes, "last": int(b == cfg.beats_per_key - 1)}
             for b in range(cfg.beats_per_key)]
    return P.encode_descriptors(cfg, [desc]) + P.encode_queries(cfg, beats)


def session(cfg, jobs, bank_keys, *, malformed=True):
    """The host script: INFO, then each job (``None``: the bad job) and its replies; with
    ``malformed``, after the first two jobs: garbage, a bad opcode, a frame cut short, a STATUS
    command; each step waits for the board's answer."""
    script = HostScript()
    script.send(P.encode_command(P.Command.INFO)).expect(INFO_BYTES).wait()
    for n, job in enumerate(jobs):
        if job is None:
            script.send(bad_job_bytes(cfg)).expect(status_bytes(cfg)).wait()
        else:
            script.send(encode_job(cfg, job, bank_keys=bank_keys))
            script.expect(job_reply_bytes(cfg, len(job.lengths))).wait()
        if malformed and n == 1:
            desc = P.encode_descriptors(cfg, [{"length": 1}])
            script.send(b"\x00\x11").expect(ERROR_BYTES).wait()
            script.send(bytes([P.SYNC, 0x99, 0, 0])).expect(ERROR_BYTES).wait()
            script.send(desc[:P.HEADER_BYTES + 2]).expect(ERROR_BYTES).wait()
            script.send(P.encode_command(P.Command.STATUS)).expect(status_bytes(cfg)).wait()
            # A job abandoned half way through its queries (the accelerator waits for the rest),
            # then RESET: the next job must run, and be exact.
            first = jobs[0]
            beats = job_query_beats(cfg, first)
            script.send(P.encode_descriptors(cfg, job_descriptors(cfg, first, pack_kv(
                cfg, first.lengths, first.k, first.v, bank_keys=bank_keys))))
            script.send(P.encode_queries(cfg, beats[:len(beats) // 2]))
            script.send(P.encode_command(P.Command.RESET) + P.encode_command(P.Command.INFO))
            script.expect(INFO_BYTES).wait()
    return script


def split_replies(cfg, frames, jobs, *, malformed=True):
    """The decoded frames, checked in sequence; returns the ``(outputs, status)`` of each job."""
    assert frames[0].opcode == P.Reply.INFO
    results, rest = [], list(frames[1:])
    for n, job in enumerate(jobs):
        heads = 0 if job is None else len(job.lengths)
        outputs, status = rest[:heads], rest[heads]
        assert [f.opcode for f in outputs] == [P.Reply.OUTPUT] * heads and status.opcode == P.Reply.STATUS
        results.append((outputs, P.decode_status(cfg, status.payloads[0])))
        rest = rest[heads + 1:]
        if malformed and n == 1:
            errors = [P.decode_error(f.payloads[0]) for f in rest[:3]]
            assert errors == [P.Malformed(P.ErrorCode.GARBAGE, 0x00), P.Malformed(P.ErrorCode.OPCODE, 0x99),
                              P.Malformed(P.ErrorCode.TIMEOUT, P.Command.DESC)]
            again = P.decode_status(cfg, rest[3].payloads[0])
            assert again == results[-1][1]          # the last record again, unchanged
            assert rest[4].opcode == P.Reply.INFO   # after the abandoned job's RESET
            rest = rest[5:]
    assert rest == []
    return results


def jobs_for(cfg, seed, shapes):
    rng = np.random.default_rng(seed)
    return [None if lengths is None else random_int_job(cfg, lengths, rng, spread_bits=3)
            for lengths in shapes]


def check_session(cfg, jobs, replies, *, malformed=True):
    frames = P.FrameDecoder(P.reply_layouts(cfg)).feed(bytes(byte for byte, _ in replies))
    assert not any(isinstance(f, P.Malformed) for f in frames)
    info = P.decode_info(frames[0].payloads[0])
    assert info.config_crc == P.config_crc(cfg) and info.divisor == DIVISOR
    results = split_replies(cfg, frames, jobs, malformed=malformed)
    for number, (job, (outputs, status)) in enumerate(zip(jobs, results)):
        assert status.jobs == number + 1 and status.busy == 0 and status.mem_error == 0
        assert status.link_error == 0 and status.cycles > 0
        if job is None:
            assert status.error == ERR_LENGTH and outputs == []
        else:
            assert status.error == ERR_NONE
            out, seen = collect_outputs(cfg, len(job.lengths), outputs)
            assert seen == set(range(len(job.lengths)))
            np.testing.assert_array_equal(out, golden.run(cfg, job).out)
    return info


#: (preset, simulator) of the end-to-end run; Icarus runs a shorter session.
#: (preset, simulator, job shapes, malformed input?) of the end-to-end runs; ``None`` is the
#: rejected job. Icarus (2-3k cycles per second on the board) runs the shortest session that still
#: has an exact job after a rejected one (about 30k cycles).
SESSIONS = [
    pytest.param("tiny", "verilator", [[5, 3], None, [4]], True, id="tiny-verilator"),
    pytest.param("tiny", "icarus", [None, [3]], False, id="tiny-icarus"),
    pytest.param("default", "verilator", [[9, 7, 1], None, [12]], True, id="default-verilator",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, simulator, shapes, malformed", SESSIONS)
def test_session(request, name, simulator, shapes, malformed):
    """Good job, rejected job, (malformed input,) good job: bit-exact outputs, every STATUS right."""
    cfg = TEST_CONFIGS[name]
    jobs = jobs_for(cfg, 11, shapes)
    bank_keys = 8
    board = BoardTop(cfg, divisor=DIVISOR, bank_keys=bank_keys, timeout_bytes=TIMEOUT_BYTES)
    replies, _ = run_board(board, session(cfg, jobs, bank_keys, malformed=malformed), simulator=simulator,
                           build_dir=bench_dir(request), divisor=DIVISOR, idle="random", seed=5)
    info = check_session(cfg, jobs, replies, malformed=malformed)
    assert info.bank_keys == bank_keys

    # The driver's run_job on the recorded bytes: it sends exactly what was played (INFO, then the
    # first job) and decodes the board's answers to the golden output.
    first = jobs[0]
    if first is None:
        return
    sent = P.encode_command(P.Command.INFO) + encode_job(cfg, first, bank_keys=bank_keys)
    answer = bytes(byte for byte, _ in replies[:INFO_BYTES + job_reply_bytes(cfg, len(first.lengths))])
    out, status = run_job(Replay(sent, answer), cfg, first, timeout=1.0)
    np.testing.assert_array_equal(out, golden.run(cfg, first).out)
    assert status.error == ERR_NONE and status.jobs == 1


@pytest.mark.slow
def test_session_spram(request):
    """The board with its KV banks on SB_SPRAM256KA (the iCE40 cell model), as on the iCEBreaker."""
    cfg = TEST_CONFIGS["tiny"]
    jobs = jobs_for(cfg, 12, [[6, 5], [3]])
    board = BoardTop(cfg, divisor=DIVISOR, memory="spram", timeout_bytes=TIMEOUT_BYTES)
    bank_keys = board.bank_keys_for(None)
    assert bank_keys == 2048                     # one core: a K and a V bank of two SPRAMs each
    replies, _ = run_board(board, session(cfg, jobs, bank_keys, malformed=False), simulator="verilator",
                           build_dir=bench_dir(request), divisor=DIVISOR, seed=6, spram_model=True)
    check_session(cfg, jobs, replies, malformed=False)


class Replay:
    """A transport that checks what is written against ``expected`` and reads from ``answer``."""

    def __init__(self, expected, answer):
        self._expected, self._answer, self._written = expected, answer, b""

    def write(self, data):
        self._written += bytes(data)
        assert self._expected.startswith(self._written), "the driver sent other bytes than were played"

    def read(self, n):
        chunk, self._answer = self._answer[:n], self._answer[n:]
        return chunk


def test_driver_errors():
    """Jobs that do not fit fail before anything is sent; silence and malformed replies raise."""
    cfg = TEST_CONFIGS["tiny"]
    job = jobs_for(cfg, 3, [[40, 30]])[0]
    quiet = Replay(b"", b"")
    with pytest.raises(JobMismatch, match=r"does not fit the board's KV memory: bank_keys \(8\) is too"):
        run_job(quiet, cfg, job, bank_keys=8)
    long = jobs_for(cfg, 3, [[cfg.max_context + 1]])[0]
    with pytest.raises(JobMismatch, match=r"length of head 0 must be in the range 1..1024 \(max_context\)"):
        run_job(quiet, cfg, long, bank_keys=8)
    job.q = job.q[:, :5]
    with pytest.raises(JobMismatch, match=r"q must have the shape \(heads, head_dim\) = \(2, 32\)"):
        encode_job(cfg, job, bank_keys=64)
    small = jobs_for(cfg, 3, [[2]])[0]
    with pytest.raises(BoardError, match="no reply from the board"):
        run_job(Replay(P.encode_command(P.Command.INFO), b""), cfg, small, timeout=0.05)
    other = P.pack(P.info_layout(), vars(P.info_value(TEST_CONFIGS["default"], bank_keys=8, divisor=4)))
    info = P.frames(P.Reply.INFO, [P.to_bytes(P.info_layout(), other)])
    with pytest.raises(BoardError, match="the board runs a different configuration"):
        run_job(Replay(P.encode_command(P.Command.INFO), info), cfg, small, timeout=0.05)
    with pytest.raises(BoardError, match="a malformed reply from the board: GARBAGE"):
        ReplyReader(Replay(b"", b"\x07"), cfg, timeout=0.05).frame()
    assert len(job_query_beats(cfg, small)) == cfg.beats_per_key


#: Lint waivers of the board. The accelerator inside needs those of tests/test_top.py (alias wires
#: Yosys leaves beside merged registers, the leaf FIFOs' unused level outputs): ACCELERATOR_ALIASES.
#: The board's own: the plain (non-stream) ports of its submodules leave a parent-side alias wire
#: beside the instance connection, as stream ports do (HIERARCHY_LINT_WAIVERS): BOARD_ALIASES.
ACCELERATOR_ALIASES = ("head", "keys", "rest", "h", "start_*", "pending", "o_cross", "i_cross", "i_up_cross*",
                       "o_scanned", "cut_*", "level", "r_level", "w_level", "produce", "consume", "r_data*",
                       "r_rdy*", "r_en*", "w_data*", "w_rdy*", "w_en*")
BOARD_ALIASES = ("i_clear", "o_busy", "o_cycles", "o_done", "o_error", "o_error$*", "o_link_clear", "rx$*",
                 "tx$*", "i_abort", "o_info_req", "o_reset$*", "o_status_sent")
BOARD_LINT_WAIVERS = {
    **AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS,
    **{("UNUSEDSIGNAL", f"Signal is not used: '{name}'"): "an alias wire (see ACCELERATOR_ALIASES)"
       for name in ACCELERATOR_ALIASES},
    **{("UNUSEDSIGNAL", f"Signal is not used: '{name}'"): "an alias wire (see BOARD_ALIASES)"
       for name in BOARD_ALIASES},
}


@pytest.mark.parametrize("name", ["tiny", "tiny2"])
def test_lint(request, name):
    path = bench_dir(request) / "board.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    board = BoardTop(TEST_CONFIGS[name], divisor=DIVISOR, bank_keys=8)
    path.write_text(design_verilog(board, toplevel="board"))
    assert verilator_lint(path, waivers=BOARD_LINT_WAIVERS) == []


def test_icebreaker():
    """tiny on the iCEBreaker: SB_PLL40_PAD 12 -> 24 MHz, four SPRAMs (a K and a V bank of 2048
    keys, two SPRAMs each), UART and LEDs."""
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    platform = ICEBreakerPlatform()
    top = BoardTop(TEST_CONFIGS["tiny"])
    plan = platform.prepare(top, name="board")
    netlist, pins = plan.files["board.il"], plan.files["board.pcf"]
    assert netlist.count("cell \\SB_PLL40_PAD") == 1
    assert all(f"parameter \\{name} {value}\n" in netlist
               for name, value in (("DIVR", 0), ("DIVF", 63), ("DIVQ", 5), ("FILTER_RANGE", 1)))
    assert netlist.count("cell \\SB_SPRAM256KA") == 4
    assert top.memory_for(platform) == "spram" and top.bank_keys_for(platform) == 2048
    assert not top.kv_slices_for(platform) and not top.partial_slices_for(platform)
    assert not top.request_slices_for(platform) and not top.registered_grant_for(platform)
    assert "_slice_" not in netlist             # not on K and V, behind the partials, on the requests
    assert "MULT18X18D" not in netlist          # Yosys maps the products into SB_MAC16s itself
    assert all(f"set_io {pin}" in pins for pin in ("uart_0__rx__io 6", "uart_0__tx__io 9", "led_0__io 11",
                                                    "led_1__io 37"))
    assert "set_frequency clk12_0__io 12.0" in pins and "24.0" in pins
    assert ice40_pll_params(12e6, 24e6).frequency == 24e6


@pytest.mark.slow
def test_ulx3s():
    """default on the ULX3S: EHXPLLL 25 -> 100 MHz, block RAM banks, UART and four LEDs."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    platform = ULX3S_85F_Platform()
    top = BoardTop(TEST_CONFIGS["default"])
    plan = platform.prepare(top, name="board")
    netlist, pins = plan.files["board.il"], plan.files["board.lpf"]
    assert netlist.count("cell \\EHXPLLL") == 1 and "SB_SPRAM256KA" not in netlist
    assert all(f"parameter \\{name} {value}\n" in netlist
               for name, value in (("CLKI_DIV", 1), ("CLKFB_DIV", 4), ("CLKOP_DIV", 6)))
    assert top.memory_for(platform) == "bram" and top.bank_keys_for(platform) == BRAM_BANK_KEYS
    assert top.kv_slices_for(platform)          # a register slice on each of the 4 cores' K and V
    assert all(f"cell \\board.{kind}_slice_{c} " in netlist for kind in "kv" for c in range(4))
    assert top.partial_slices_for(platform)     # and one behind each core's partial
    assert all(f"cell \\board.top.partial_slice_{c} " in netlist for c in range(4))
    assert "partial_slice_4" not in netlist
    assert top.request_slices_for(platform)     # and one on each core's K and V requests
    assert all(f"cell \\board.top.{kind}req_slice_{c} " in netlist for kind in "kv" for c in range(4))
    assert "kreq_slice_4" not in netlist and "vreq_slice_4" not in netlist
    assert "cell \\board.kv_write_slice " in netlist   # and one on the host's KV writes
    # The normalizer's lane slices and its factor, and every core's PV lanes, in MULT18X18D blocks
    # with their own registers (16 + 1 + 4 x 8).
    cfg = TEST_CONFIGS["default"]
    blocks = Normalizer(cfg).lane_products.multipliers + 1 + cfg.cores * cfg.lanes
    assert netlist.count("cell \\MULT18X18D ") == blocks == 49
    assert top.registered_grant_for(platform)   # and the arbiter's grant a register
    arbiter = netlist[netlist.index("module \\board.top.arbiter\n"):]
    arbiter = arbiter[:arbiter.index("\nend\n")]
    assert " \\sel\n" in arbiter and " \\held\n" not in arbiter
    assert all(f'LOCATE COMP "led_{n}__io' in pins for n in range(4)) and 'led_4__io' not in pins
    params = ecp5_pll_params(25e6, 100e6)
    assert (params.clki_div, params.clkfb_div, params.clkop_div, params.vco) == (1, 4, 6, 600e6)


def test_divisor():
    assert _divisor(24e6, 115200) == 208 and _divisor(100e6, 115200) == 868
    with pytest.raises(ValueError, match="115200 baud is 3.5% off at 1 MHz"):
        _divisor(1e6, 115200)
    with pytest.raises(ValueError, match="too slow for 115200 baud"):
        _divisor(0.3e6, 115200)


def test_constructor_errors():
    cfg = TEST_CONFIGS["tiny"]
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        BoardTop("tiny")
    with pytest.raises(ValueError, match="divisor must be at least 4"):
        BoardTop(cfg, divisor=2)
    with pytest.raises(ValueError, match="bank_keys must be in the range 1..8192"):
        BoardTop(cfg, bank_keys=0)
    with pytest.raises(ValueError, match="memory must be one of bram, spram, not 'dram'"):
        BoardTop(cfg, memory="dram")
    with pytest.raises(ValueError, match="baud must be at least 1, not 0"):
        BoardTop(cfg, baud=0)
    with pytest.raises(TypeError, match="kv_slices must be a bool or None, not 1"):
        BoardTop(cfg, kv_slices=1)
    assert BoardTop(cfg, memory="spram", kv_slices=True).kv_slices_for(None)
    assert not BoardTop(cfg, kv_slices=False).kv_slices_for(None) and BoardTop(cfg).kv_slices_for(None)
    for option in ("partial_slices", "request_slices", "registered_grant"):
        for value in ("yes", 1, 0):
            with pytest.raises(TypeError, match=f"{option} must be a bool or None, not {value!r}"):
                BoardTop(cfg, **{option: value})
        chosen = getattr(BoardTop, f"{option}_for")
        assert chosen(BoardTop(cfg), None)                                      # block RAM: on
        assert not chosen(BoardTop(cfg, memory="spram"), None)                  # SPRAM: off
        assert chosen(BoardTop(cfg, memory="spram", **{option: True}), None)
        off = BoardTop(cfg, **{option: False})                                  # independent of the others
        assert not chosen(off, None) and off.kv_slices_for(None)
        assert all(getattr(off, f"{other}_for")(None) for other in
                   ("partial_slices", "request_slices", "registered_grant") if other != option)
    with pytest.raises(ValueError, match="divisor must be given to simulate a BoardTop"):
        design_verilog(BoardTop(cfg), toplevel="board")
    with pytest.raises(ValueError, match="the iCE40 PLL reaches"):
        ice40_pll_params(12e6, 1000e6)
