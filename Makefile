# Two commands matter: `make demo` (load sample_data, build the dbt project, show the result)
# and `make test` (every test). Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DB ?= demo.duckdb
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := False

.PHONY: install demo test lint bench bench-peers clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	rm -f $(DEMO_DB) $(DEMO_DB).wal
	$(PY) -m loader load sample_data --db $(DEMO_DB)
	$(PY) -m loader status --db $(DEMO_DB)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check loader tests bench

bench: install
	$(PY) bench/run.py

bench-peers: install
	bash bench/peers.sh

clean:
	rm -rf $(VENV) target logs *.duckdb *.duckdb.wal
