# Two set-up commands: `make demo` and `make test`. Each creates .venv on a fresh machine with exactly the
# versions in requirements.lock (every package, transitive ones included); `make lock` upgrades on purpose.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
PIP_VERSION := 26.3

.PHONY: demo test install lock clean

$(STAMP): pyproject.toml $(LOCK) requirements-data.txt
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	scripts/lock.sh check $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelprint demo --out demo-out --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Resolve pyproject.toml's ranges to the newest allowed versions, write the lock, rebuild .venv, run the suite.
lock:
	PY=$(PY) scripts/lock.sh refresh
	$(MAKE) test

clean:
	rm -rf $(VENV) demo-out
