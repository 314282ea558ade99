PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# ccxt (a test and bench peer) pins uvloop 0.22.1, which closes live connections after a cancelled
# connect (service/cli.py runs on asyncio's loop with it); ccxt itself runs on the fixed 0.23, so it
# is installed over ccxt's pin (pip says it disagrees, and installs it)
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/pip install --quiet 'uvloop>=0.23; sys_platform != "win32"'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/aggbook demo

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy reads the folders as the aggbook package they install as: through a link named aggbook
typecheck: $(STAMP)
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/aggbook
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p aggbook.book -p aggbook.client -p aggbook.feeds -p aggbook.proto \
		-p aggbook.service -p aggbook.simulator

bench: $(STAMP)
	$(BIN)/python bench/book_bench.py
	$(BIN)/python bench/feed_bench.py
	$(BIN)/python bench/metrics_bench.py
	$(BIN)/python bench/cold_start_bench.py
	$(BIN)/python bench/peer_bench.py
	$(BIN)/python bench/service_bench.py
	$(BIN)/python bench/scale_bench.py

# the long service soak: faults of every kind, clients coming and going; figures on the last line
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
