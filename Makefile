# leanattn: every target sets up what is missing first (a venv in .venv/, Icarus Verilog).
#   make            the main job on the default preset (PRESET=name to change it)
#   make verilog    build/<preset>/lean_attention.v, config.json, manifest.json
#   make test       the full test suite (what CI runs)
#   make test-fast  the quick tier for development
#   make bench      schedule benchmark and software speed (tables, JSON, plots under build/bench/)

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESET  ?= default
PYTEST  := $(PY) -m pytest -n auto

.PHONY: all setup tools demo verilog config test test-fast bench accuracy resources fmax synth synth-all area lint clean

all: demo

# -- setup ---------------------------------------------------------------------------------------
# The venv is rebuilt only when pyproject.toml changes. From Debian: Icarus Verilog (required), the
# lz4 headers (required: Verilator's FST waveform writer is compiled with them) and ccache (optional:
# warm Verilator rebuilds take ~1 s instead of ~12 s; the cache is build/ccache, capped at 1 GB),
# installed when missing and this user may install packages (root or password-less sudo).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

setup: $(STAMP) tools

tools:
	@missing=; \
	command -v iverilog >/dev/null 2>&1 || missing="$$missing iverilog"; \
	command -v ccache >/dev/null 2>&1 || missing="$$missing ccache"; \
	test -f /usr/include/lz4.h || missing="$$missing liblz4-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "Missing Debian packages:$$missing. Install them with:  sudo apt-get install -y$$missing"; \
	    command -v iverilog >/dev/null 2>&1 && test -f /usr/include/lz4.h || exit 1; \
	  else \
	    echo "Installing Debian packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi
	@command -v iverilog >/dev/null 2>&1 && test -f /usr/include/lz4.h

# -- the main job --------------------------------------------------------------------------------
# The Verilog of the preset, a demo job through the golden model, then the same job on the
# generated RTL under Verilator (bit-exact check, error, cycles against the ideal).
demo: verilog
	$(VENV)/bin/leanattn demo --preset $(PRESET) -o build/demo/$(PRESET)
	$(VENV)/bin/leanattn sim build/demo/$(PRESET)/job.npz -o build/demo/$(PRESET)/rtl.npz \
	  --preset $(PRESET) --simulator verilator

verilog: setup
	$(VENV)/bin/leanattn gen --preset $(PRESET) -o build/$(PRESET)

config: setup
	$(VENV)/bin/leanattn config --preset $(PRESET)

# -- tests ---------------------------------------------------------------------------------------
test: setup
	$(PYTEST) --durations=40

test-fast: setup
	$(PYTEST) -m "not slow"

# -- measurements --------------------------------------------------------------------------------
bench: setup
	$(PY) -m leanattn.sim.bench --out build/bench

accuracy: setup
	$(PY) -m leanattn.sim.accuracy --out build/accuracy

resources: setup
	$(PY) -m leanattn.fpga.unit_resources --preset $(PRESET) --out build/synth/units

# ECP5-85F Fmax and critical path of each unit alone (minutes at default; exit 1 below 100 MHz).
fmax: setup
	$(PY) -m leanattn.fpga.unit_fmax --preset $(PRESET) --out build/synth/fmax

# -- FPGA builds ---------------------------------------------------------------------------------
# make synth BOARD=icebreaker PRESET=tiny | BOARD=ulx3s PRESET=default: bitstream and
# build/synth/<board>-<preset>/report.json + report.md (exit 1 if it does not fit or misses timing).
# Without PRESET= on the command line, each board builds its own preset.
BOARD ?= icebreaker
BOARD_PRESET_icebreaker := tiny
BOARD_PRESET_ulx3s := default
SYNTH_PRESET = $(if $(filter command line,$(origin PRESET)),$(PRESET),$(BOARD_PRESET_$(BOARD)))
synth: setup
	$(VENV)/bin/leanattn synth --board $(BOARD) --preset $(SYNTH_PRESET) -o build/synth/$(BOARD)-$(SYNTH_PRESET)

synth-all: setup
	$(VENV)/bin/leanattn synth --board icebreaker --preset tiny -o build/synth/icebreaker-tiny
	$(VENV)/bin/leanattn synth --board ulx3s --preset default -o build/synth/ulx3s-default

# Where the board top's logic goes: resources per instance, synthesized without flattening
# (build/synth/area-<board>-<preset>/area.md + area.json; iCE40 tiny: about 2 minutes).
area: setup
	$(PY) -m leanattn.fpga.area --board $(BOARD) --preset $(SYNTH_PRESET) --out build/synth/area-$(BOARD)-$(SYNTH_PRESET)

lint: setup
	$(VENV)/bin/ruff check gen hdl sim tests fpga

clean:
	rm -rf build .pytest_cache .hypothesis
