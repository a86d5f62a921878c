# fieldlink: `make run` starts the whole local system, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Type stubs of the ESP32 port (machine, network, esp32) for checking firmware/hal/esp32.py statically.
ESP32_STUBS := $(VENV)/esp32-stubs

.DEFAULT_GOAL := help
.PHONY: help setup system-packages test run lint typecheck check clean bench-firmware bench flash deploy

help:
	@echo "make run     start the local stack, the ingest service and 3 simulated nodes (Ctrl-C stops all)"
	@echo "make test    set up, then run the whole test suite"
	@echo "make setup   virtual environment + Debian packages mosquitto and influxdb (idempotent)"
	@echo "make check   ruff and mypy"
	@echo "make bench-firmware   filter cost, payload size, the node's heap (results: docs/performance.md)"
	@echo "make bench   the ingest pipeline against its references on the real stack (BENCH_ARGS='--quick', '--docs')"
	@echo "make flash PORT=/dev/ttyUSB0 DEVICE=node-01 FIRMWARE=ESP32_GENERIC-....bin [SITE=name] [DRY_RUN=1]"
	@echo "            erase a board, write MicroPython, deploy the node (docs/field-guide.md)"
	@echo "make deploy PORT=/dev/ttyUSB0 DEVICE=node-01 [SITE=name] [DRY_RUN=1]   update the node on a board"

setup: $(STAMP) $(ESP32_STUBS)/.installed system-packages

# Each step prints one line; pip's output goes to $(SETUP_LOG), which a failing step names and ends with.
SETUP_LOG ?= $(VENV)/setup.log
STEP = @bash tools/setup/step.sh $(SETUP_LOG)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fieldlink needs Python 3.11 or newer, found " + sys.version.split()[0])'
	@mkdir -p $(VENV) && : > $(SETUP_LOG)
	@echo "setting up $(VENV) (output of each step in $(SETUP_LOG))"
	$(STEP) "virtual environment $(VENV)" $(PYTHON) -m venv $(VENV)
	$(STEP) "pip up to date" $(BIN)/pip install --upgrade pip
	$(STEP) "fieldlink and its dev tools (pyproject.toml)" $(BIN)/pip install -e '.[dev]'
	@touch $(STAMP)

$(ESP32_STUBS)/.installed: $(STAMP)
	$(STEP) "ESP32 type stubs for mypy" $(BIN)/pip install --upgrade --target $(ESP32_STUBS) 'micropython-esp32-esp32-generic-stubs>=1.24'
	@touch $@

system-packages:
	@SETUP_LOG=$(SETUP_LOG) bash tools/setup/system-packages.sh

test: setup check
	@SETUP_LOG=$(SETUP_LOG) bash tools/setup/system-packages.sh --tests
	$(BIN)/pytest

run: setup
	$(BIN)/fieldlink run

# Boards (docs/field-guide.md): the Python side only, no database or broker packages needed.
_BOARD_ARGS = $(if $(SITE),--site $(SITE)) $(if $(DRY_RUN),--dry-run)

flash: $(STAMP)
	@test -n "$(PORT)" -a -n "$(DEVICE)" || { echo "usage: make flash PORT=/dev/ttyUSB0 DEVICE=node-01 FIRMWARE=path.bin [SITE=name] [DRY_RUN=1]"; exit 2; }
	$(BIN)/fieldlink flash $(PORT) $(DEVICE) $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(_BOARD_ARGS)

deploy: $(STAMP)
	@test -n "$(PORT)" -a -n "$(DEVICE)" || { echo "usage: make deploy PORT=/dev/ttyUSB0 DEVICE=node-01 [SITE=name] [DRY_RUN=1]"; exit 2; }
	$(BIN)/fieldlink deploy $(PORT) $(DEVICE) $(_BOARD_ARGS)

bench-firmware: setup
	$(BIN)/python -m tools.bench.firmware $(BENCH_ARGS)

# The ingest pipeline (bench/): results in bench/results/, the table with --docs in docs/performance.md.
bench: setup
	@bash tools/setup/system-packages.sh --tests
	$(BIN)/python -m bench $(BENCH_ARGS)

lint:
	$(BIN)/ruff check ingest tools tests firmware shared bench
	$(BIN)/ruff format --check ingest tools tests firmware shared bench

typecheck:
	$(BIN)/mypy

check: lint typecheck

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
