# The two commands of the README's Quick start. Both set everything up first.
.PHONY: demo test setup dft lint typecheck

setup:
	@bash scripts/setup.sh

dft: setup
	@bash scripts/install_gpaw.sh

demo: setup
	OMP_NUM_THREADS=1 .venv/bin/alcsp run examples/demo-cuau-emt.toml --dir runs/demo
	.venv/bin/alcsp report runs/demo

# tests/test_slurm.py starts a one-node Slurm cluster (scripts/slurm.sh: root, apt-get) and
# fails rather than skips where it cannot; ALCSP_REQUIRE_SLURM=0 make test lets it skip.
test: setup dft
	@bash scripts/install_chromium.sh
	OMP_NUM_THREADS=1 ALCSP_REQUIRE_SLURM=$${ALCSP_REQUIRE_SLURM:-1} .venv/bin/python -m pytest -q --durations=15 tests

# ruff (lint and format) and mypy on src/ (settings in pyproject.toml); CI runs it before
# the tests. `make typecheck`: mypy alone.
lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy

typecheck: setup
	.venv/bin/mypy
