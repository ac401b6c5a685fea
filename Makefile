# Two commands do everything on a fresh machine: `make figures` (the small profile: Fashion-MNIST, the README's
# gallery) and `make test`; `make smoke` checks every code path in ~5 minutes (digits, one seed, two points per
# figure, into figures/out/smoke/ from its own run store, runs-smoke/).
# Every target depends on the virtual environment, which is (re)built only when requirements.txt or constraints.txt
# changes; every package in it is pinned (requirements.txt: the direct ones; constraints.txt: all, written by make lock).
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= small
CLUSTER ?= auto
RUNS    ?= $(if $(filter smoke,$(PROFILE)),runs-smoke,runs)
DATA    ?= data
DEVICE  ?= auto
OUT     ?= figures/out
FIGURE_ARGS = $(strip --profile $(PROFILE) --cluster $(CLUSTER) --runs-dir $(RUNS) --data-dir $(DATA) \
              --device $(DEVICE) --out $(OUT) $(if $(DRY_RUN),--dry-run))

.PHONY: install lock figures smoke test bench gpu-check list clean-figures FORCE
.DEFAULT_GOAL := figures

PIP_VERSION := 26.3
# TORCH_INDEX: a PyTorch wheel index for torch / torchvision (e.g. https://download.pytorch.org/whl/cu126 for a V100 or
# a driver older than 580, .../whl/cpu for no GPU), checked before anything is installed; every other package as pinned.
TORCH_INDEX ?=
TORCH_PINS = $(shell grep -E '^torch(vision)?==' requirements.txt)
$(VENV)/.installed: requirements.txt constraints.txt
	@$(if $(TORCH_INDEX),$(PYTHON) -m common.torch_index '$(TORCH_INDEX)')
	$(PYTHON) -m venv $(if $(TORCH_INDEX),--clear) $(VENV)
	$(VENV)/bin/pip install pip==$(PIP_VERSION) >/dev/null
	$(if $(TORCH_INDEX),$(VENV)/bin/pip install --no-deps --index-url '$(TORCH_INDEX)' $(TORCH_PINS))
	$(VENV)/bin/pip install -r requirements.txt -c constraints.txt
	echo '$(TORCH_INDEX)' > $(VENV)/.torch-index
	touch $@

# Refresh the pins: a fresh environment from requirements.txt alone, frozen into constraints.txt (then run make test).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install pip==$(PIP_VERSION) >/dev/null
	.venv-lock/bin/pip install -r requirements.txt
	{ echo "# Every package of the environment that 'make install' builds, pinned (written by 'make lock'; see requirements.txt)."; \
	  echo "# Platform-specific packages (CUDA libraries, triton) apply only where pip would install them."; \
	  .venv-lock/bin/pip freeze --exclude-editable | sort -f; } > constraints.txt
	rm -rf .venv-lock

# A TORCH_INDEX other than the one the environment was built from rebuilds it from scratch (rm -rf .venv: back to
# PyPI's torch).
install:
	@$(if $(TORCH_INDEX),[ "$$(cat $(VENV)/.torch-index 2>/dev/null)" = '$(TORCH_INDEX)' ] || rm -f $(VENV)/.installed)
	@$(MAKE) --no-print-directory $(VENV)/.installed

# PROFILE: small (default), smoke, tiny (digits, a smoke test) or paper (GPU); CLUSTER: auto (a pool of local
# processes on a machine of more than one core, else one process), none, local or slurm; RUNS: the run store
# (default runs/, smoke's runs-smoke/); DEVICE: auto, cpu, cuda or cuda:N; DRY_RUN=1 (CLUSTER=slurm): print the sbatch
# scripts that would be submitted, submitting nothing.
figures: $(VENV)/.installed
	$(PY) -m figures all $(FIGURE_ARGS)

# Every script run and every figure drawn (no scoreboard) at the smoke profile, tiny's runs thinned to one seed and
# two extreme points of every axis a figure sweeps: figures/out/smoke/ from runs-smoke/ (~5 min on a 2-core laptop).
smoke: PROFILE = smoke
smoke: figures

fig-%: $(VENV)/.installed FORCE
	$(PY) -m figures $@ $(FIGURE_ARGS)

tab-%: $(VENV)/.installed FORCE
	$(PY) -m figures $@ $(FIGURE_ARGS)

# What a figure (or all) needs and costs, computing nothing: make plan-fig-bip-trajectory PROFILE=paper, make plan-all
# (PUBLISHED_DENSE=1: ImageNet ResNet-50 pruned from torchvision's published weights instead of a dense model of ours)
plan-%: $(VENV)/.installed FORCE
	$(PY) -m figures plan $* --profile $(PROFILE) --runs-dir $(RUNS) $(if $(PUBLISHED_DENSE),--published-dense)

list: $(VENV)/.installed
	$(PY) -m figures list

# Three pytest workers, one file each at a time (module fixtures are built once), one BLAS/OpenMP thread per process:
# the Slurm tests, which mostly wait on the cluster, run on one worker while the two others keep two cores busy with
# the rest of the suite (the longest files first: tests/conftest.py).
TEST_WORKERS ?= 3
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# common/bench.py first, then every <folder>/bench.py (each prints ratios measured in its own single process)
bench: $(VENV)/.installed
	$(PY) -m common.bench
	@for f in */bench.py; do m=$${f%/bench.py}; [ "$$m" = common ] || $(PY) -m $$m.bench || exit 1; done

# One short run on one GPU (sized for <= 8 minutes on an H100), section by section into figures/out/gpu/gpu-check.json:
# environment, every script end to end, resume, JPEG loading, paper-size step times, BiP's threshold, DDP, ...
gpu-check: $(VENV)/.installed
	$(PY) -m figures.gpu_check --out figures/out/gpu/gpu-check.json

clean-figures:
	rm -rf $(OUT)/$(PROFILE)

FORCE:
