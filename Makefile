# plmops: two commands set up a fresh machine.
#   make demo  — create .venv if absent, install, run the whole pipeline on embedded defaults
#   make test  — create/update .venv with the dev extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.plmops-installed
SHARED ?= ../shared/data

.PHONY: demo test test-slow bench serve-env clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build on local disk; any other spec pulls gigabytes of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plmops demo --shared-data $(SHARED)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)  # pytest exits 5 when nothing is marked slow yet
	$(PY) -m pytest -q -m slow || test $$? -eq 5

bench: $(STAMP)  # CPU benchmarks; benchmarks/pretrain_gpu.py needs a GPU machine
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,bench]"
	$(PY) benchmarks/ingest.py --shared-data $(SHARED)
	$(PY) benchmarks/collators.py --shared-data $(SHARED)
	$(PY) benchmarks/cino_fast_mlm.py
	$(PY) benchmarks/pretrain_cpu.py --shared-data $(SHARED)
	$(PY) benchmarks/eval_throughput.py --shared-data $(SHARED)

serve-env:  # .venv-serve: Triton (nvidia-pytriton, Python backend) with numpy < 2; tests build it when absent
	bash scripts/setup_serve_env.sh

clean:
	rm -rf .plmops
