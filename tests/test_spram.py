# amaranth: UnusedElaboratable=no
"""SPRAMBank: the KV bank on SB_SPRAM256KA, simulated with YoWASP Yosys's iCE40 cell model on Icarus
Verilog and Verilator, bit-exact with the plain KVBank (amaranth.sim) on the same writes and reads:
a load, then requests (good and bad) while more writes take the SPRAM's single port."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from leanattn.fpga.spram import SPRAMBank, spram_geometry, spram_model_verilog
from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import KVBank, KVMemory, bank_write_layout
from leanattn.hdl.ports import kv_data_layout, kv_request_layout
from leanattn.sim.cocotb_stream import check_in_order
from leanattn.sim.cocotb_util import design_verilog, run_cocotb
from leanattn.sim.configs import TEST_CONFIGS, TINY2
from leanattn.sim.harness import harness_verilog, stream_ports
from leanattn.sim.stream_bench import bench_dir, simulate


def load_layout(cfg):
    return data.StructLayout({"write": bank_write_layout(cfg), "last": 1})


class BankBench(wiring.Component):
    """A bank loaded first (``i_load`` up to ``last``); then requests and late writes pass."""

    def __init__(self, cfg, *, bank_keys, bank):
        self._cfg, self._bank_keys, self._bank = cfg, bank_keys, bank
        super().__init__({
            "i_load": In(stream.Signature(load_layout(cfg))),
            "i_late": In(stream.Signature(bank_write_layout(cfg))),
            "i_req":  In(stream.Signature(kv_request_layout(cfg))),
            "o_data": Out(stream.Signature(kv_data_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = bank = self._bank(self._cfg, bank_keys=self._bank_keys)
        loaded = Signal()
        with m.If(self.i_load.valid & self.i_load.payload.last):
            m.d.sync += loaded.eq(1)
        m.d.comb += [
            self.i_load.ready.eq(1), self.i_late.ready.eq(loaded),
            bank.i_write.valid.eq(self.i_load.valid | (self.i_late.valid & loaded)),
            bank.i_write.payload.eq(self.i_load.payload.write),
            bank.i_req.valid.eq(self.i_req.valid & loaded), bank.i_req.payload.eq(self.i_req.payload),
            self.i_req.ready.eq(bank.i_req.ready & loaded),
        ]
        with m.If(loaded):
            m.d.comb += bank.i_write.payload.eq(self.i_late.payload)
        wiring.connect(m, bank.o_data, wiring.flipped(self.o_data))
        return m


def vectors(cfg, bank_keys, seed, *, lo=0, span=None, requests=40):
    """Load words ``lo .. lo + span`` of a bank (window base random) with random data; requests in
    that span, some bad (outside the window, misaligned, 0 keys); late writes that rewrite loaded
    words with their own values (so the results do not depend on when they land), rewrite the
    window base, or miss the bank. Returns (inputs, expected outputs) as payload bits."""
    rng = np.random.default_rng(seed)
    bpk, words = cfg.beats_per_key, bank_keys * cfg.beats_per_key
    span = words - lo if span is None else span
    base = int(rng.integers(0, 1000))
    image = rng.integers(cfg.input_min, cfg.input_max + 1, (words, cfg.lanes))
    write = lambda i: {"base": 0, "addr": i, "data": [int(x) for x in image[i]]}
    loads = [{"base": 1, "addr": base}] + [write(i) for i in rng.permutation(range(lo, lo + span))]
    late = [write(int(rng.integers(lo, lo + span))) for _ in range(3 * requests)]
    late += [{"base": 1, "addr": base}, {"base": 0, "addr": words + 3, "data": [1] * cfg.lanes}]
    late = [late[i] for i in rng.permutation(len(late))]
    reqs, outs = [], []
    for _ in range(requests):
        kind = rng.integers(8)
        first = int(rng.integers(lo, lo + span))
        keys = int(rng.integers(1, max(2, min(4, (lo + span - first) // bpk) + 1)))
        addr = (base + first) * cfg.lanes
        good = first + keys * bpk <= lo + span
        if kind == 0:
            addr, good = base * cfg.lanes - cfg.lanes * int(rng.integers(1, 4)), False
        elif kind == 1 and cfg.lanes > 1:
            addr, good = addr + 1, False
        elif kind == 2:
            keys, good = 0, False
        elif not good:
            keys = 1
            good = first + bpk <= lo + span
            if not good:
                continue
        window_ok = base * cfg.lanes <= addr and addr + keys * cfg.head_dim <= (base + words) * cfg.lanes
        reqs.append({"addr": addr, "keys": keys})
        beats = keys * bpk
        if good and window_ok:
            outs += [[int(x) for x in image[first + b]] for b in range(beats)]
        else:
            outs += [[0] * cfg.lanes] * beats
    pack = lambda layout, items: [layout.const(item).as_bits() for item in items]
    inputs = {"i_load": pack(load_layout(cfg), [{"write": w, "last": int(i == len(loads) - 1)}
                                                for i, w in enumerate(loads)]),
              "i_late": pack(bank_write_layout(cfg), late),
              "i_req": pack(kv_request_layout(cfg), reqs)}
    return inputs, {"o_data": pack(kv_data_layout(cfg), outs)}


def run_with_cells(design, inputs, outputs, *, simulator, build_dir, patterns, seed=1):
    """:func:`leanattn.sim.stream_bench.run_cocotb_bench`, with the SPRAM cell model simulated too."""
    build_dir.mkdir(parents=True, exist_ok=True)
    ports = stream_ports(design, inputs, outputs)
    vectors_ = {**inputs, **outputs}
    for name, items in inputs.items():
        (build_dir / f"in_{name}.hex").write_text("".join(f"{v:x}\n" for v in items) or "0\n")
    (build_dir / "counts.hex").write_text("".join(f"{len(vectors_[name]):x}\n" for name, _, _ in ports))
    wrapper = harness_verilog("bench", ports, {name: len(items) for name, items in inputs.items()})
    text = design_verilog(design, toplevel="bench") + "\n" + spram_model_verilog()
    run_cocotb(text, toplevel="bench", test_module="leanattn.sim.tb_streams", simulator=simulator,
               build_dir=build_dir, seed=seed, wrapper=("harness", wrapper),
               tb_args={"patterns": [list(p) for p in patterns],
                        "budget": 50 * sum(len(v) for v in vectors_.values()) + 1000})
    for k, pattern in enumerate(patterns):
        lines = (build_dir / "xfer_o_data.txt").read_text().splitlines()
        received = [int(line.split()[1], 16) for line in lines if int(line.split()[0]) == k]
        check_in_order(outputs["o_data"], received, name=f"o_data (run {k}, {pattern}, {simulator})")


#: (config, bank_keys, lo, span): one SPRAM shared by two 8-bit words (tiny), three side by side
#: for 33-bit words (odd), two deep with the span across their boundary (tiny, 1100 keys).
CASES = {
    "tiny":      ("tiny", 40, 0, None),
    "odd_wide":  ("odd", 30, 0, None),
    "tiny_deep": ("tiny", 1100, 2 * 16384 - 200, 400),
}


@pytest.mark.parametrize("case", CASES)
def test_kvbank_matches_vectors(case):
    """The plain KVBank gives the expected outputs: the reference the SPRAM bank is held to."""
    name, bank_keys, lo, span = CASES[case]
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(cfg, bank_keys, 5, lo=lo, span=span, requests=12)
    simulate(BankBench(cfg, bank_keys=bank_keys, bank=KVBank), inputs, outputs, idle="random",
             backpressure="random", seed=3)


@pytest.mark.parametrize("case, simulator", [
    ("tiny", "verilator"), ("tiny", "icarus"),
    pytest.param("odd_wide", "verilator", marks=pytest.mark.slow),
    pytest.param("tiny_deep", "verilator", marks=pytest.mark.slow),
    pytest.param("tiny_deep", "icarus", marks=pytest.mark.slow),
])
def test_spram_bank(request, case, simulator):
    """SPRAMBank with the cell model: the same outputs as KVBank, with and without stalls."""
    name, bank_keys, lo, span = CASES[case]
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(cfg, bank_keys, 5, lo=lo, span=span, requests=12)
    run_with_cells(BankBench(cfg, bank_keys=bank_keys, bank=SPRAMBank), inputs, outputs,
                   simulator=simulator, build_dir=bench_dir(request),
                   patterns=[("none", "none"), ("random", "random")])


def test_geometry():
    assert spram_geometry(8, 32768) == (2, 1, 1)          # tiny: two words per SPRAM word, 1024 keys
    assert spram_geometry(8, 32769) == (2, 1, 2)
    assert spram_geometry(4, 65536) == (4, 1, 1)
    assert spram_geometry(16, 16384) == (1, 1, 1)
    assert spram_geometry(33, 100) == (1, 3, 1)
    assert SPRAMBank.max_keys(PRESETS["tiny"]) == 2048     # 4 SPRAMs, 1 core x K and V: two each
    assert SPRAMBank.max_keys(TINY2) == 1024                # 2 cores x K and V: one each
    assert SPRAMBank(PRESETS["tiny"], bank_keys=1024).sprams == 1
    assert SPRAMBank(PRESETS["tiny"], bank_keys=1025).sprams == 2
    with pytest.raises(ValueError, match="4 SPRAMs cannot hold 8 banks"):
        SPRAMBank.max_keys(PRESETS["default"])


def test_memory_hook():
    """KVMemory makes its banks with the factory it is given."""
    made = []

    def factory(cfg, *, bank_keys):
        made.append(bank_keys)
        return SPRAMBank(cfg, bank_keys=bank_keys)
    cfg = PRESETS["tiny"]
    design_verilog(KVMemory(cfg, bank_keys=16, bank=factory), toplevel="mem")
    assert made == [16] * (2 * cfg.cores)
    with pytest.raises(TypeError, match="bank must be a callable"):
        KVMemory(cfg, bank_keys=16, bank=3)


def test_constructor_errors():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        SPRAMBank({"head_dim": 32}, bank_keys=4)
    with pytest.raises(ValueError, match="bank_keys must be in the range"):
        SPRAMBank(PRESETS["tiny"], bank_keys=0)


def test_cell_model():
    text = spram_model_verilog()
    assert text.startswith("module SB_SPRAM256KA") and text.rstrip().endswith("endmodule")
    assert "MASKWREN" in text
