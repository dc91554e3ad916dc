# Every target bootstraps .venv from pyproject.toml on first use (and again when it changes).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLAUDE_CODE_VERSION := 2.1.330
CLAUDE_DIR := .cache/claude-code
CLAUDE_STAMP := $(CLAUDE_DIR)/.installed-$(CLAUDE_CODE_VERSION)

.PHONY: test lint types unit demo bench chaos claude-cli clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

# The real Claude Code CLI for the end-to-end tests: project-local, git-ignored, pinned.
# Without npm the install is skipped and those tests skip with the reason.
$(CLAUDE_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(CLAUDE_DIR) && \
	  if npm install --prefix $(CLAUDE_DIR) --no-audit --no-fund --loglevel=error \
	    @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION); then touch $@; \
	  else echo "*** npm install of Claude Code failed: real-CLI tests will be skipped ***"; fi; \
	else echo "npm not found: real Claude Code CLI tests will be skipped"; fi

claude-cli: $(CLAUDE_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) claude-cli
	$(BIN)/pytest -n 2 -q

test: lint types unit

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m bench

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
