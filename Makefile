# fastclip: `make demo` (set up + train on the toy world + evaluate every epoch), `make sweep` (the toy world's phase
# diagram) and `make test` (set up + tests).
# Both create .venv on first use. TORCH_SPEC picks the torch build; the default is what this project pins.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_LOGS ?= runs
DEMO_NAME ?= demo
CUE_CONFLICT ?= ../shared/data/texture-vs-shape/cue-conflict-subset

PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastclip-installed
EXT_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu)

.PHONY: setup demo sweep test bench clean

$(STAMP): pyproject.toml setup.py $(EXT_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install setuptools wheel ninja
	$(PY) -m pip install --no-build-isolation -e '.[dev]'
	$(PY) -m fastclip.info
	touch $(STAMP)

setup: $(STAMP)

# A second `make demo` continues the same run (and finds nothing left to train) instead of refusing the name.
# The demo trains in the toy world's `paper` preset (docs/toyworld.md) and ends with the findings report.
demo: setup
	resume=$$(test -d $(DEMO_LOGS)/$(DEMO_NAME)/checkpoints && echo "--resume latest"); \
	$(VENV)/bin/fastclip-train --logs $(DEMO_LOGS) --name $(DEMO_NAME) --toyworld-preset paper $$resume
	$(VENV)/bin/fastclip-eval $(DEMO_LOGS)/$(DEMO_NAME) --suite toyworld $(if $(wildcard $(CUE_CONFLICT)),--cue-conflict $(CUE_CONFLICT))
	$(VENV)/bin/fastclip-eval report $(DEMO_LOGS)/$(DEMO_NAME)

# The toy world's phase diagram: texture predictivity {1.0, 0.8, 0.6, 0.4} x seeds {0, 1} at the demo's length,
# texture bias and IQA alignment every epoch, one figure (docs/toyworld.md). SWEEP_PARALLEL runs at once.
SWEEP_LOGS ?= runs/sweep
SWEEP_FIGURE ?= $(SWEEP_LOGS)/phase_diagram.png
sweep: setup
	scripts/toyworld_sweep.sh $(SWEEP_LOGS) $(SWEEP_FIGURE)

test: setup
	$(VENV)/bin/pytest -q
	TRITON_INTERPRET=1 $(VENV)/bin/pytest -q -m triton_interpret

bench: setup
	$(VENV)/bin/pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results/$$(date -u +%Y%m%dT%H%M)-$$(git rev-parse --short HEAD).json
	$(PY) benchmarks/report.py

clean:
	rm -rf build $(VENV) fastclip/_C*.so
