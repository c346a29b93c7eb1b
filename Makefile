# Two commands for a fresh machine with Python 3.11 and make:
#   make run   - development server on 127.0.0.1:8080 with the embedded defaults
#   make test  - install with the test extra and run the whole suite
#   make bench - the benchmark (bench/README.md): results in bench/results.md and the README
#   make audit - known vulnerabilities in the pinned dependencies (constraints.txt), with pip-audit
#   make sbom  - a CycloneDX SBOM of the installed service: dist/sbom.cdx.json
#   make lock  - refresh constraints.txt and deploy/tools-requirements.txt (then make test, make audit)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# Every install is pinned: constraints.txt holds the versions CI tested (make lock refreshes it).
CONSTRAINTS := constraints.txt
TOOLS := .venv-tools/bin

.PHONY: run test install install-test clean bench audit sbom lock knowledge-archive

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e .

# The test install runs pip again only when what it installs from changed (or the venv is new):
# the stamp lives in the venv, so removing .venv (make clean) installs afresh.
INSTALLED_TEST := $(VENV)/.installed-test
install-test: $(INSTALLED_TEST)

$(INSTALLED_TEST): setup.cfg pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $@

run: install
	CDS_AUTH_REQUIRED=false CDS_DEVELOPMENT=true $(BIN)/cds-service serve --host $(HOST) --port $(PORT)

# The unit and behaviour tests in parallel, one process per core (a module stays in one process);
# then the system tests, which start servers and measure time and memory, one at a time.
# Both runs always run, and make test fails if either did.
# The system run collects tests/system only: collecting the whole tree to deselect it took ~10 s.
test: install-test
	$(BIN)/python -m pytest -m "not system" -n auto --dist loadfile; first=$$?; \
	$(BIN)/python -m pytest -m system tests/system; second=$$?; \
	exit $$(( first > second ? first : second ))

# Service vs a bare Flask baseline under the same gunicorn, the stages in-process, the FHIR
# fallback, start-up and memory: bench/results.md, bench/results.json and the README table (~4 min).
bench: install
	$(BIN)/python bench/run.py

# pip-audit and cyclonedx-bom live in their own venv: never in the service's environment or SBOM.
$(TOOLS)/python: deploy/tools-requirements.txt
	$(PYTHON) -m venv .venv-tools
	$(TOOLS)/python -m pip install --quiet --upgrade pip
	$(TOOLS)/pip install --quiet -r deploy/tools-requirements.txt
	touch $@

# Fails on a known vulnerability without a dated exception in deploy/pip-audit-exceptions.txt,
# and on an expired exception; an audit that cannot reach PyPI prints a NOTICE (CDS_AUDIT_STRICT=1: fails).
audit: $(TOOLS)/python
	$(TOOLS)/python .ci/audit.py --requirements $(CONSTRAINTS) --exceptions deploy/pip-audit-exceptions.txt

# The runtime install as deployed (pinned, not editable, with the postgres extra, no test extra) in a
# throwaway venv; the venv's own pip and setuptools are removed first: the service does not use them.
sbom: $(TOOLS)/python
	rm -rf build/sbom-venv && mkdir -p dist
	$(PYTHON) -m venv build/sbom-venv
	build/sbom-venv/bin/pip install --quiet -c $(CONSTRAINTS) '.[postgres]'
	build/sbom-venv/bin/python -m pip uninstall --quiet --yes pip setuptools
	$(TOOLS)/cyclonedx-py environment --output-reproducible --mc-type application \
		--output-file dist/sbom.cdx.json build/sbom-venv/bin/python
	rm -rf build/sbom-venv
	@echo "SBOM: dist/sbom.cdx.json"

# A fresh resolve of setup.cfg's ranges (and of the tools) in throwaway venvs, pinned.
lock:
	rm -rf build/lock-venv build/lock-tools
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --upgrade pip
	build/lock-venv/bin/pip install --quiet -e '.[test]'
	{ sed -n '1,3p' $(CONSTRAINTS); build/lock-venv/bin/pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	$(PYTHON) -m venv build/lock-tools
	build/lock-tools/bin/pip install --quiet pip-audit cyclonedx-bom
	{ sed -n '1,2p' deploy/tools-requirements.txt; build/lock-tools/bin/pip freeze --all | grep -v -E '^(pip|setuptools|wheel)=='; } \
		> deploy/tools-requirements.txt.new
	mv deploy/tools-requirements.txt.new deploy/tools-requirements.txt
	rm -rf build/lock-venv build/lock-tools
	@echo "constraints.txt and deploy/tools-requirements.txt refreshed: review the diff, then make test and make audit"

# The knowledge folder as the archive deploy/k8s/kustomization.yaml turns into a ConfigMap.
knowledge-archive:
	tar -czf deploy/k8s/knowledge.tar.gz -C knowledge .

clean:
	rm -rf $(VENV) .venv-tools build dist *.egg-info
