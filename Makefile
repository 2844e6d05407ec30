# Everything bootstraps itself on a fresh machine: uv (via pip if missing), then the locked env.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv/.synced
# the env is synced once by $(VENV); `uv run` must not re-sync it (that would drop the bench group)
RUN = $(UV) run --frozen --no-sync

.PHONY: demo test lint format bench drill serve clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@[ -x $(UV) ] || { mkdir -p $(dir $(UV)) && ln -sf "$$(python3 -c 'import shutil; print(shutil.which("uv"))')" $(UV); }

$(VENV): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	@touch $(VENV)

demo: $(VENV)
	$(RUN) convergent demo $(ARGS)

test: $(VENV)
	$(RUN) pytest $(PYTEST_ARGS)

lint: $(VENV)
	$(RUN) ruff check src tests bench
	$(RUN) ruff format --check src tests bench
	$(RUN) mypy

format: $(VENV)
	$(RUN) ruff check --fix src tests bench
	$(RUN) ruff format src tests bench

bench: $(VENV)
	@for b in bench/*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

drill: $(VENV)
	$(RUN) convergent drill $(ARGS)

serve: $(VENV)
	$(RUN) convergent serve $(ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache convergent.db*
