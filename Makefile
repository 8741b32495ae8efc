# Two commands do everything on a fresh machine with Python 3.11:
#   make report   set up .venv, run the default study (snakemake --cores all), print the report's path
#   make test     set up .venv, run the test suite (pytest)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= config/config.yaml

.PHONY: report test bench setup clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

report: setup
	$(BIN)/snakemake --cores all --configfile $(PROFILE)
	@echo "report: $(CURDIR)/report/report.html"

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m adaloss bench

clean-results:
	rm -rf results report/report.html logs .snakemake
