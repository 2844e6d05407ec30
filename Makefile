# Everything bootstraps itself on a fresh machine: uv (via pip if missing), then the locked env.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v python3.11 || command -v python3)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv/.synced

.PHONY: demo test lint format bench drill serve clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

$(VENV): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	@touch $(VENV)

demo: $(VENV)
	$(UV) run --frozen convergent demo $(ARGS)

test: $(VENV)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: $(VENV)
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy

format: $(VENV)
	$(UV) run --frozen ruff check --fix src tests bench
	$(UV) run --frozen ruff format src tests bench

bench: $(VENV)
	@for b in bench/*.py; do echo "== $$b"; $(UV) run --frozen python $$b || exit 1; done

drill: $(VENV)
	$(UV) run --frozen convergent drill $(ARGS)

serve: $(VENV)
	$(UV) run --frozen convergent serve $(ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache convergent.db*
