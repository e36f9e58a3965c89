# Two commands matter (see README.md): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install the project into it the first time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := runs/demo

.PHONY: demo test lint benchmark clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	@echo "capsrobust demo: CapsNet (paper recipe) vs the small CNN baseline on mnist-5k, CPU-sized:"
	@echo "  capsnet-paper for 5 epochs (the recipe's full 15 take ~15 min on 2 cores), cnn-small for 5 epochs."
	@echo "  The 35M-parameter cnn-baseline is left out: on 2 CPU cores it needs ~6 min per epoch."
	$(BIN)/capsrobust train capsnet-paper --data mnist-5k --epochs 5 --out $(DEMO)/capsnet-paper --resume
	$(BIN)/capsrobust train cnn-small --data mnist-5k --epochs 5 --out $(DEMO)/cnn-small --resume
	$(BIN)/capsrobust evaluate $(DEMO)/capsnet-paper --data mnist-5k
	$(BIN)/capsrobust evaluate $(DEMO)/cnn-small --data mnist-5k
	$(BIN)/capsrobust sweep $(DEMO)/capsnet-paper $(DEMO)/cnn-small --suite quick --data mnist-5k \
		--out $(DEMO)/sweep-quick --resume --no-progress

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/ruff check .

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
