# The two commands of the README: `make demo` and `make test`. Both create .venv on first use
# and reuse it afterwards (the stamp file is rebuilt only when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geofm-installed
# Pinned so that pip takes the wheels on this machine's disk instead of downloading a new torch.
TORCH := torch==2.14.1 torchvision==0.29.1
SHARED_DATA ?= ../shared/data

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m geofm.demo --data-root $(SHARED_DATA)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(PY) $$script || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
