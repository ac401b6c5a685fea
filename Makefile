# Two commands do everything on a fresh machine: `make figures` and `make test`.
# Every target depends on the virtual environment, which is (re)built only when requirements.txt changes.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= tiny
CLUSTER ?= none
RUNS    ?= runs
DATA    ?= data
DEVICE  ?= auto
FIGURE_ARGS = --profile $(PROFILE) --cluster $(CLUSTER) --runs-dir $(RUNS) --data-dir $(DATA) --device $(DEVICE)

.PHONY: install figures test bench list clean-figures FORCE
.DEFAULT_GOAL := figures

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip >/dev/null
	$(VENV)/bin/pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

figures: $(VENV)/.installed
	$(PY) -m figures all $(FIGURE_ARGS)

fig-%: $(VENV)/.installed FORCE
	$(PY) -m figures $@ $(FIGURE_ARGS)

tab-%: $(VENV)/.installed FORCE
	$(PY) -m figures $@ $(FIGURE_ARGS)

list: $(VENV)/.installed
	$(PY) -m figures list

# Two pytest workers, one file each at a time (module fixtures are built once), one BLAS/OpenMP thread per process:
# the Slurm tests, which mostly wait on the cluster, run beside the rest of the suite.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# common/bench.py first, then every <folder>/bench.py (each prints ratios measured in its own single process)
bench: $(VENV)/.installed
	$(PY) -m common.bench
	@for f in */bench.py; do m=$${f%/bench.py}; [ "$$m" = common ] || $(PY) -m $$m.bench || exit 1; done

clean-figures:
	rm -rf figures/out/$(PROFILE)

FORCE:
