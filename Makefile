# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create the virtualenv and install what they need on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_DIRS := $(patsubst %/package-lock.json,%,$(shell find . -name package-lock.json -not -path '*/node_modules/*' -not -path './.venv/*'))

.PHONY: venv node tools demo test lint typecheck unit contracts clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch lies on local disk; install it first so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

node:
	@for d in $(NPM_DIRS); do \
	  if [ ! -d $$d/node_modules ] || [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
	    echo "npm ci in $$d"; (cd $$d && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	  fi; \
	done

# promtool checks the alert rules; Debian's package is unpacked locally (nothing is installed).
tools: .tools/usr/bin/promtool

.tools/usr/bin/promtool:
	mkdir -p .tools/deb
	cd .tools/deb && (apt-get download prometheus 2>/dev/null || (apt-get update -qq && apt-get download prometheus))
	dpkg -x .tools/deb/prometheus_*.deb .tools
	rm -rf .tools/deb

demo: venv node
	$(BIN)/taonode devnet

lint: venv
	$(BIN)/ruff check taonode tests bench
	$(BIN)/ruff format --check taonode tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv node tools
	$(BIN)/pytest -q

test: lint typecheck unit

contracts: venv node
	$(BIN)/taonode contracts build

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
