# Two commands matter: `make demo` (load sample_data, build the dbt project, show the result)
# and `make test` (every test, the dbt project on Spark included). Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DB ?= demo.duckdb
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := False

.PHONY: install demo test lint bench bench-peers clean

install: $(VENV)/.installed

# The package index can drop connections mid-download: retry the install a few times.
PIP_INSTALL := $(PY) -m pip install --quiet --retries 10 --timeout 60

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	for i in 1 2 3 4; do $(PIP_INSTALL) --upgrade pip && break; sleep 5; done
	for i in 1 2 3 4; do $(PIP_INSTALL) -e '.[test]' && break; \
	  [ $$i = 4 ] && exit 1; echo "pip install failed, retrying ($$i)"; sleep 10; done
	touch $@

# The Spark target's dependencies (pyspark bundles Spark; it needs Java 17), for make test.
$(VENV)/.installed-spark: $(VENV)/.installed
	for i in 1 2 3 4; do $(PIP_INSTALL) -e '.[test,spark]' && break; \
	  [ $$i = 4 ] && exit 1; echo "pip install failed, retrying ($$i)"; sleep 10; done
	touch $@

demo: install
	rm -f $(DEMO_DB) $(DEMO_DB).wal
	$(PY) -m loader load sample_data/segment-logs --db $(DEMO_DB) --tracking-plan sample_data/tracking_plan.json
	$(PY) -m loader status --db $(DEMO_DB)
	SEGMENT_DUCKDB_PATH=$(DEMO_DB) $(VENV)/bin/dbt build --project-dir . --profiles-dir . --quiet
	$(PY) dbt_summary.py $(DEMO_DB)
	$(PY) -m loader publish --db $(DEMO_DB) --to demo_marts.duckdb

test: install $(VENV)/.installed-spark
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check loader tests bench

bench: install
	$(PY) bench/run.py

bench-peers: install
	bash bench/peers.sh

clean:
	rm -rf $(VENV) target logs *.duckdb *.duckdb.wal spark-warehouse metastore_db derby.log
