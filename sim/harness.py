"""A Verilog stream harness: stimulus, stalls and recording run inside the simulator, not in Python.

cocotb coroutines that drive and watch streams cycle by cycle cost a Python round trip per clock
edge, a few thousand cycles per second. The harness generated here moves that per-cycle work into
Verilog around the unit, so both simulators run at their own speed and the bench in Python only
sets a pattern, releases reset and waits for ``done``:

* each input stream has a **player**: its payloads come from ``in_<port>.hex`` (``$readmemh``),
  ``valid`` follows a per-stream stall pattern, and once raised stays up until the transfer;
* each output stream has a **recorder**: ``ready`` follows its own stall pattern; every transfer
  is appended to ``xfer_<port>.txt`` as ``run payload-hex cycle``, and a transfer rule broken by
  the unit (``valid`` dropped, or the payload changed, before the transfer) is counted in
  ``rule_errors`` and printed;
* input transfers are logged the same way, so latency is measured from both sides in Python.

Stall patterns (``idle_mode`` / ``bp_mode``): 0 none, 1 fixed (one cycle in three), 2 seeded
random (about 30 %), each stream with its own xorshift32 generator seeded from ``seed``. The
number of items per stream comes from ``counts.hex`` (inputs in order, then expected outputs), so
one build serves any vector set that fits the memory ``depth``.

The harness's ports are marked public for Verilator, which then needs no ``--public-flat-rw`` on
the design inside. Ports of the ``harness`` module: ``clk``, ``rst`` (resets the unit too), ``seed[31:0]``,
``run_id[15:0]`` (the first column of the logs), ``idle_mode[1:0]``, ``bp_mode[1:0]``, ``flush``
(flushes the logs), ``done`` (every input sent and every expected output received) and
``rule_errors[31:0]``.
"""

from amaranth.hdl import Value

__all__ = ["stream_ports", "harness_verilog", "RANDOM_THRESHOLD"]

#: A random stall happens when the low 8 bits of the generator are below this (77/256 ~ 0.3).
RANDOM_THRESHOLD = 77


def stream_ports(dut, inputs, outputs):
    """``[(port, width, is_input)]`` for the named stream ports of ``dut``, inputs first."""
    ports = []
    for names, is_input in ((inputs, True), (outputs, False)):
        for name in sorted(names):
            port = getattr(dut, name, None)
            if port is None or not hasattr(port, "valid"):
                raise ValueError(f"{type(dut).__name__} has no stream port {name!r}")
            ports.append((name, Value.cast(port.payload).shape().width, is_input))
    return ports


def _depth(count):
    return 1 << max(count - 1, 1).bit_length()


def _stall(prefix, mode):
    """Verilog expression: this cycle stalls, for the generator ``{prefix}_rng``/``_ctr``."""
    return (f"(({mode} == 2'd1) && ({prefix}_ctr == 2'd0)) || "
            f"(({mode} == 2'd2) && ({prefix}_rng[7:0] < 8'd{RANDOM_THRESHOLD}))")


def _generator(prefix, index):
    salt = (0x9E3779B9 * (index + 1)) & 0xFFFFFFFF
    return f"""
  reg [31:0] {prefix}_rng;
  reg [1:0]  {prefix}_ctr;
  wire [31:0] {prefix}_x1 = {prefix}_rng ^ ({prefix}_rng << 13);
  wire [31:0] {prefix}_x2 = {prefix}_x1 ^ ({prefix}_x1 >> 17);
  wire [31:0] {prefix}_next = {prefix}_x2 ^ ({prefix}_x2 << 5);
  always @(posedge clk)
    if (rst) begin
      {prefix}_rng <= (seed ^ 32'h{salt:08x}) | 32'd1;
      {prefix}_ctr <= 2'd0;
    end else begin
      {prefix}_rng <= {prefix}_next;
      {prefix}_ctr <= ({prefix}_ctr == 2'd2) ? 2'd0 : {prefix}_ctr + 2'd1;
    end"""


def _player(name, width, index, depth):
    p = f"in_{name}"
    return _generator(p, index) + f"""
  reg [{width - 1}:0] {p}_mem [0:{depth - 1}];
  initial $readmemh("{p}.hex", {p}_mem);
  reg [31:0] {p}_idx;
  reg        {p}_valid;
  wire       {p}_ready;
  wire       {p}_fire = {p}_valid && {p}_ready;
  wire [31:0] {p}_left = count[{index}] - {p}_idx - ({p}_fire ? 32'd1 : 32'd0);
  integer {p}_fd;
  initial {p}_fd = $fopen("xfer_{name}.txt", "w");
  always @(posedge clk)
    if (rst) begin
      {p}_idx   <= 32'd0;
      {p}_valid <= 1'b0;
    end else begin
      if ({p}_fire) begin
        $fwrite({p}_fd, "%0d %h %0d\\n", run_id, {p}_mem[{p}_idx], cycle);
        {p}_idx <= {p}_idx + 32'd1;
      end
      if (!{p}_valid || {p}_ready)
        {p}_valid <= ({p}_left != 32'd0) && !({_stall(p, "idle_mode")});
    end
  always @(posedge clk) if (flush) $fflush({p}_fd);
  wire {p}_done = {p}_idx == count[{index}];"""


def _recorder(name, width, index):
    p = f"out_{name}"
    return _generator(p, index) + f"""
  wire [{width - 1}:0] {p}_payload;
  wire       {p}_valid;
  reg        {p}_ready;
  reg [31:0] {p}_n;
  reg        {p}_held;
  reg [{width - 1}:0] {p}_last;
  reg [31:0] {p}_errors;
  initial {p}_errors = 32'd0;
  integer {p}_fd;
  initial {p}_fd = $fopen("xfer_{name}.txt", "w");
  always @(posedge clk)
    if (rst) begin
      {p}_n     <= 32'd0;
      {p}_ready <= 1'b0;
      {p}_held  <= 1'b0;
    end else begin
      {p}_ready <= !({_stall(p, "bp_mode")});
      if ({p}_held && (!{p}_valid || {p}_payload != {p}_last)) begin
        $display("harness: {name} broke the stream rule at cycle %0d (run %0d)", cycle, run_id);
        {p}_errors <= {p}_errors + 32'd1;
      end
      if ({p}_valid && {p}_ready) begin
        $fwrite({p}_fd, "%0d %h %0d\\n", run_id, {p}_payload, cycle);
        {p}_n <= {p}_n + 32'd1;
      end
      {p}_held <= {p}_valid && !{p}_ready;
      {p}_last <= {p}_payload;
    end
  always @(posedge clk) if (flush) $fflush({p}_fd);
  wire {p}_done = {p}_n >= count[{index}];"""


def harness_verilog(toplevel, ports, depths):
    """Verilog source of module ``harness`` around the unit module ``toplevel``.

    ``ports`` is :func:`stream_ports`; ``depths`` ``{port: items}`` sizes each player's memory (a
    power of two at least that large).
    """
    body, connections, done, errors = [], [], [], ["32'd0"]
    for index, (name, width, is_input) in enumerate(ports):
        if is_input:
            body.append(_player(name, width, index, _depth(depths.get(name, 1))))
            connections += [f".{name}__payload(in_{name}_mem[in_{name}_idx])",
                            f".{name}__valid(in_{name}_valid)", f".{name}__ready(in_{name}_ready)"]
            done.append(f"in_{name}_done")
        else:
            body.append(_recorder(name, width, index))
            connections += [f".{name}__payload(out_{name}_payload)",
                            f".{name}__valid(out_{name}_valid)", f".{name}__ready(out_{name}_ready)"]
            done.append(f"out_{name}_done")
            errors.append(f"out_{name}_errors")
    joined = ",\n    ".join(connections)
    return f"""// Stream harness around {toplevel} (generated by leanattn.sim.harness).
module harness (
  input  wire        clk         /*verilator public_flat_rw*/,
  input  wire        rst         /*verilator public_flat_rw*/,
  input  wire [31:0] seed        /*verilator public_flat_rw*/,
  input  wire [15:0] run_id      /*verilator public_flat_rw*/,
  input  wire [1:0]  idle_mode   /*verilator public_flat_rw*/,
  input  wire [1:0]  bp_mode     /*verilator public_flat_rw*/,
  input  wire        flush       /*verilator public_flat_rw*/,
  output wire        done        /*verilator public_flat_rw*/,
  output wire [31:0] rule_errors /*verilator public_flat_rw*/
);
  reg [31:0] count [0:{len(ports) - 1}];
  initial $readmemh("counts.hex", count);
  reg [63:0] cycle;
  always @(posedge clk) cycle <= rst ? 64'd0 : cycle + 64'd1;
{"".join(body)}

  {toplevel} dut (
    .clk(clk),
    .rst(rst),
    {joined}
  );

  assign done = !rst && {" && ".join(done)};
  assign rule_errors = {" + ".join(errors)};
endmodule
"""
