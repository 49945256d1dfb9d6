# The two commands of the README:  `make demo` (generate a video with the bundled model)
# and `make test` (the whole test suite). Both set up .venv on first use; nothing is downloaded
# at run time beyond the pinned packages (torch comes from the local wheel cache).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

# The venv, then the pinned offline ComfyUI the e2e tests start (.comfyui/, or COMFYUI_DIR).
$(STAMP): requirements.txt requirements-dev.txt requirements-comfyui.txt tests/e2e/comfyui_setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) tests/e2e/comfyui_setup.py
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m selfforcing_core generate --out out/demo.mp4

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out .comfyui
