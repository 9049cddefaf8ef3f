# Refrain: `make demo` and `make test` are the quick start; both install into .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.8
UV := .tools/bin/uv
PY := .venv/bin/python
SERVE ?= 1
CLIPS ?= 300
# Test configuration: the machine's PostgreSQL and Redis (override to point elsewhere).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/refrain
TEST_BROKER_URL ?= redis://127.0.0.1:6379/14
MUSICNN_DIR := var/models/musicnn

.PHONY: install demo test test-labelstudio lint test-fast browser-deps services clean

install: .venv/.installed

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# uv resolves torch==2.13.0 to the CPU wheel in /opt/wheels (pinned in uv.lock); no CUDA download.
.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@if [ -f active_learning/core/musicnn/fetch.py ]; then \
	  $(PY) -m active_learning.core.musicnn.fetch --dest $(MUSICNN_DIR); fi
	$(PY) scripts/warm_caches.py
	touch $@

# Debian's Chromium for the Playwright tests (Playwright never downloads a browser here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Start PostgreSQL and Redis if they are down (the commands this machine kind documents).
services:
	@scripts/ensure_services.sh

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/mypy taxonomy quality/core active_learning/core

# The suite, then the live Label Studio stage. The main run leaves the live tests out (they run
# once, in their stage, against the server it starts), whatever LABEL_STUDIO_URL says.
test: install browser-deps services lint
	env -u LABEL_STUDIO_URL -u LABEL_STUDIO_TOKEN \
	  DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	  .venv/bin/pytest -q -m "not labelstudio" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-labelstudio

# Label Studio 1.23 (pinned in scripts/labelstudio-constraints.txt; venv and data cached under var/)
# on a free loopback port, pytest -m labelstudio against it, then stopped. A few minutes at most.
test-labelstudio: install services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	  scripts/labelstudio_tests.sh $(LS_PYTEST_ARGS)

test-fast: install
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	  .venv/bin/pytest -q -m "not browser and not worker" $(PYTEST_ARGS)

demo: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py demo --clips $(CLIPS) $(if $(filter 0,$(SERVE)),,--serve)

clean:
	rm -rf var .venv .tools .pytest_cache .ruff_cache
