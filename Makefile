# The two commands a newcomer needs: `make book` and `make test`.
# Both share one idempotent install into .venv (re-run only when
# requirements.txt or pyproject.toml change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nbgrader calls alembic and jupyter from the venv's bin/ by name.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Triton kernels run through Triton's interpreter when there is no GPU.
export TRITON_INTERPRET ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo 1)

.PHONY: install book test clean mathjax

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Warnings are errors (-W -n) and a notebook that fails to execute fails the build.
book: install
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

# The .ipynb twins of the chapters that Colab and Binder open (launch buttons).
# Run after editing a chapter; tests/test_launch_notebooks.py fails when stale.
.PHONY: notebooks
notebooks: install
	$(BIN)/python tools/launch_notebooks.py

# The browser test (tests/test_book_browser.py) serves MathJax from the npm
# package instead of the CDN; installed next to the venv when npm exists.
NPM_PREFIX := $(VENV)/npm
MATHJAX    := $(NPM_PREFIX)/node_modules/mathjax/es5/tex-mml-chtml.js

mathjax:
	@if [ -f $(MATHJAX) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --silent mathjax@3; \
	else echo "npm not found: the browser test will be skipped (install Node.js and npm, then run make mathjax)"; fi

test: book mathjax
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite must never be empty"; exit 1; fi; \
	exit $$rc

clean:
	rm -rf _build

# The course on a local JupyterHub (hub/hub.py, book/assignments/hub.md):
# `make hub` prints the URL and the generated passwords, `make hub-stop`
# ends it and keeps the course directory. JupyterHub comes from PyPI
# (hub/requirements.txt), its proxy from npm (hub/package.json).
HUB_STAMP := $(VENV)/.hub-installed
HUB_NPM   := $(VENV)/hub-npm

.PHONY: hub hub-stop hub-install test-hub

hub-install: $(HUB_STAMP)

$(HUB_STAMP): $(STAMP) hub/requirements.txt hub/package.json
	$(BIN)/python -m pip install --quiet -r hub/requirements.txt -c constraints.txt
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
