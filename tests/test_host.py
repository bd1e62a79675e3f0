"""The host driver's command line, ``leanattn board``, against a stand-in board on a pseudo-terminal:
the stand-in checks that the bytes it receives are exactly the driver's encoding of the job (as the
board's parser reads them) and answers with the golden model's outputs in protocol frames. The
real board's answers are checked in tests/test_board.py (the driver's run_job replayed on them)."""

import argparse
import os
import threading

import numpy as np
import pytest

from leanattn.cli import UsageError
from leanattn.fpga import host
from leanattn.fpga import protocol as P
from leanattn.hdl.config import PRESETS
from leanattn.sim import golden
from leanattn.sim.demo import demo_job
from leanattn.sim.job import load_job


class StandInBoard(threading.Thread):
    """Answers INFO, then, once it has read a whole job's commands, the job's OUTPUT frames (heads
    in reverse order, as a board may finish them) and its STATUS record."""

    def __init__(self, fd, cfg, job, *, bank_keys):
        super().__init__(daemon=True)
        self._fd, self._cfg, self._job, self._bank_keys = fd, cfg, job, bank_keys
        try:
            self.expected = P.CommandModel(cfg).run([host.encode_job(cfg, job, bank_keys=bank_keys)])
        except host.JobMismatch:
            self.expected = None
        self.received = []
        self.stop = False

    def run(self):
        cfg, model, layouts = self._cfg, P.CommandModel(self._cfg), P.reply_layouts(self._cfg)
        while not self.stop:
            try:
                chunk = os.read(self._fd, 4096)
            except OSError:
                return
            for action in model.feed(chunk):
                if action == ("info",):
                    info = P.pack(layouts[P.Reply.INFO],
                                  vars(P.info_value(cfg, bank_keys=self._bank_keys, divisor=208)))
                    self._send(P.frames(P.Reply.INFO, [P.to_bytes(layouts[P.Reply.INFO], info)]))
                    continue
                self.received.append(action)
                if self.expected is not None and len(self.received) == len(self.expected):
                    self._answer(layouts)

    def _answer(self, layouts):
        cfg = self._cfg
        out = golden.run(cfg, self._job).out
        for head in reversed(range(len(out))):
            beats = np.asarray(out[head]).reshape(-1, cfg.lanes)
            payloads = [P.to_bytes(layouts[P.Reply.OUTPUT], P.pack(layouts[P.Reply.OUTPUT], {
                "head": head, "out": [int(x) for x in beat], "last": int(b == len(beats) - 1)}))
                for b, beat in enumerate(beats)]
            self._send(P.frames(P.Reply.OUTPUT, payloads))
        status = P.pack(layouts[P.Reply.STATUS], {"jobs": 1, "cycles": 4321})
        self._send(P.frames(P.Reply.STATUS, [P.to_bytes(layouts[P.Reply.STATUS], status)]))

    def _send(self, data):
        os.write(self._fd, data)


@pytest.fixture
def job_file(tmp_path):
    cfg = PRESETS["tiny"]
    path = tmp_path / "job.npz"
    np.savez(path, **demo_job(cfg, seed=4, batch=1, heads=2, longest=40))
    return cfg, path


def board_args(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    host.add_parser(sub)
    return parser.parse_args(["board", *argv])


def serve(cfg, job, *, bank_keys):
    master, slave = os.openpty()
    board = StandInBoard(master, cfg, job, bank_keys=bank_keys)
    board.start()
    return board, os.ttyname(slave), (master, slave)


def test_board_command(job_file, tmp_path, capsys):
    cfg, path = job_file
    job = load_job(path, cfg)
    board, port, fds = serve(cfg, job, bank_keys=128)
    out_path = tmp_path / "out.npz"
    try:
        status = host.run(board_args(str(path), "-o", str(out_path), "--port", port, "--preset", "tiny",
                                     "--timeout", "5"))
    finally:
        board.stop = True
        for fd in fds:
            os.close(fd)
    assert status == 0
    assert board.received == board.expected             # the driver sent exactly the job's commands
    printed = capsys.readouterr().out
    assert "bit-exact with the golden model: yes" in printed and "cycles: 4321" in printed
    saved = np.load(out_path)
    np.testing.assert_array_equal(saved["out_int"].reshape(job.flat_heads, -1), golden.run(cfg, job).out)
    assert int(saved["cycles"]) == 4321 and "ideal_cycles" in saved and "out_scale" in saved


def test_board_command_errors(job_file, tmp_path):
    cfg, path = job_file
    job = load_job(path, cfg)
    out_path = tmp_path / "out.npz"
    with pytest.raises(UsageError, match="cannot use the serial port /nonexistent/tty"):
        host.run(board_args(str(path), "-o", str(out_path), "--port", "/nonexistent/tty", "--preset", "tiny"))
    board, port, fds = serve(cfg, job, bank_keys=4)     # banks too small for the job
    try:
        with pytest.raises(UsageError, match=r"does not fit the board's KV memory: bank_keys \(4\)"):
            host.run(board_args(str(path), "-o", str(out_path), "--port", port, "--preset", "tiny",
                                "--timeout", "5"))
    finally:
        board.stop = True
        for fd in fds:
            os.close(fd)
    assert not out_path.exists()
    with pytest.raises(UsageError, match="invalid configuration"):
        host.run(board_args(str(path), "-o", str(out_path), "--port", port, "--set", "lanes=5"))
