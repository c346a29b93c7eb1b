# Two commands for a fresh machine with Python 3.11 and make:
#   make run   - development server on 127.0.0.1:8080 with the embedded defaults
#   make test  - install with the test extra and run the whole suite
#   make bench - the benchmark (bench/README.md): results in bench/results.md and the README
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install install-test clean bench knowledge-archive

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

# Service vs a bare Flask baseline under the same gunicorn, the stages in-process, the FHIR
# fallback, start-up and memory: bench/results.md, bench/results.json and the README table (~4 min).
bench: install
	$(BIN)/python bench/run.py

# The knowledge folder as the archive deploy/k8s/kustomization.yaml turns into a ConfigMap.
knowledge-archive:
	tar -czf deploy/k8s/knowledge.tar.gz -C knowledge .

clean:
	rm -rf $(VENV) build *.egg-info
