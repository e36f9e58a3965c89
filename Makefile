# Two commands matter (see README.md): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install the project into it the first time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint benchmark clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	@echo "capsrobust demo: the quick benchmark profile on the embedded mnist-5k digits, sized for 2 CPU cores:"
	@echo "  trains capsnet-paper, cnn-small and cnn-recon for 5 epochs each (the recipes' full 15 take longer),"
	@echo "  attacks 200 test images with attacks/quick.toml (FGSM, 10-step PGD), runs the reconstruction detector"
	@echo "  and writes an HTML report. Run it again to resume where it stopped."
	$(BIN)/capsrobust benchmark --profile quick

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/ruff check .

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
