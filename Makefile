# Two commands for a fresh machine with Python 3.11 and make:
#   make run   - development server on 127.0.0.1:8080 with the embedded defaults
#   make test  - install with the test extra and run the whole suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	CDS_AUTH_REQUIRED=false CDS_DEVELOPMENT=true $(BIN)/cds-service serve --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
