# Everything bootstraps itself on a fresh machine: uv (via pip if missing), then the locked env.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv/.synced
# the env is synced once by $(VENV); `uv run` must not re-sync it (that would drop the bench group)
RUN = $(UV) run --frozen --no-sync

.PHONY: demo test lint format bench drill drill-ci drill-cluster drill-cluster-ci serve clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@[ -x $(UV) ] || { mkdir -p $(dir $(UV)) && ln -sf "$$(python3 -c 'import shutil; print(shutil.which("uv"))')" $(UV); }

# bytecode is compiled once here: with PYTHONDONTWRITEBYTECODE set (as on this image) every
# process would otherwise compile every module it imports, about 2 s of CPU per process start
$(VENV): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --compile-bytecode
	$(RUN) python -m compileall -q src shop/src
	@touch $(VENV)

demo: $(VENV)
	$(RUN) convergent demo $(ARGS)

# two workers, one per core (most tests wait on subprocesses and databases); the tests that must
# not be split are scheduled together (tests/conftest.py). PYTEST_XDIST= runs the suite in one process.
# The suite starts some hundreds of Python processes: their bytecode is cached even where the
# environment says PYTHONDONTWRITEBYTECODE (a quarter of each start-up's CPU).
PYTEST_XDIST ?= -n 2 --dist loadscope
test: $(VENV)
	PYTHONDONTWRITEBYTECODE= $(RUN) pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: $(VENV)
	$(RUN) ruff check src shop tests bench
	$(RUN) ruff format --check src shop tests bench
	$(RUN) mypy
	$(RUN) lint-imports

format: $(VENV)
	$(RUN) ruff check --fix src shop tests bench
	$(RUN) ruff format src shop tests bench

bench: $(VENV)
	@for b in bench/*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

# the long drill: 2,000 orders, >= 20 kills, 30% provider faults, a PostgreSQL restart, a 30 s NATS outage
# (the restart and the outage act on a PostgreSQL and a nats-server the drill starts itself)
drill: $(VENV)
	$(RUN) convergent drill \
		--orders 2000 --bookings 100 --trades 20 --workers 3 --kills 24 --fault-rate 0.3 \
		--pg-restart --broker-outage 30 --duration 300 --settle-timeout 180 \
		--report-dir reports/drill-long --no-live $(ARGS)

# the short drills CI runs: PostgreSQL with NATS (the drill's own, restarted and cut mid-round),
# SQLite with the embedded log
drill-ci: $(VENV)
	$(RUN) convergent drill --pg-restart --broker-outage 5 \
		--orders 200 --bookings 20 --trades 5 --kills 4 --fault-rate 0.2 --duration 40 \
		--settle-timeout 120 --report-dir reports/drill-ci-pg --no-live
	rm -rf reports/drill-ci-sqlite
	$(RUN) convergent drill --orders 200 --bookings 20 --trades 5 --kills 4 --fault-rate 0.2 \
		--duration 40 --settle-timeout 120 --report-dir reports/drill-ci-sqlite --no-live

# the shop on network-namespace hosts (root): its own PostgreSQL, a 3-node NATS cluster, an API,
# a relay, 2 workers; SIGKILLs, a NATS node lost, a worker partitioned past its lease, latency+loss
drill-cluster: $(VENV)
	$(RUN) convergent drill --cluster --orders 600 --bookings 60 --trades 10 --workers 2 \
		--kills 10 --fault-rate 0.2 --broker-outage 20 --lease-seconds 5 --duration 300 \
		--settle-timeout 300 --report-dir reports/drill-cluster --no-live $(ARGS)

# the short cluster round CI runs (a few minutes); exits 1 if an invariant fails
drill-cluster-ci: $(VENV)
	$(RUN) convergent drill --cluster --orders 60 --bookings 6 --trades 3 --workers 2 --kills 3 \
		--fault-rate 0.2 --broker-outage 10 --lease-seconds 4 --duration 60 --settle-timeout 180 \
		--report-dir reports/drill-cluster-ci --no-live --seed 18

serve: $(VENV)
	$(RUN) convergent serve $(ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache convergent.db*
