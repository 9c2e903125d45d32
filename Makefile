# Two entry points, each doing all the set-up on a fresh Debian machine with Python 3.11:
#   make demo   short adversarial training run on CPU, 2 processes, through accelerate launch
#   make test   the test suite (installs the dev, deepspeed, ffcv, slurm and trackers extras;
#               FFCV needs apt) against a real local SLURM that it starts (slurm/local/start.sh, root)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.distadv-base
FULL   := $(VENV)/.distadv-test
ARGS   ?=

.PHONY: demo test install ffcv-deps fmnist-data slurm-up slurm-down

install: $(FULL)

# The core package only: what `make demo` needs (no extras).
$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $(BASE)

# FFCV's build and run time need Debian's OpenCV and libturbojpeg (~690 MB, ~40 s once).
ffcv-deps:
	@if dpkg -s libturbojpeg0-dev libopencv-dev pkg-config g++ >/dev/null 2>&1; then \
	  echo "ffcv system libraries: present"; else \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    libturbojpeg0-dev libopencv-dev pkg-config g++ libgl1; fi

# The real Fashion-MNIST for the tests (Debian's idx .gz files, 30 MB; make demo needs none).
fmnist-data:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then echo "fashion-mnist: present"; else \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    dataset-fashion-mnist; fi

$(FULL): $(BASE) pyproject.toml
	$(MAKE) ffcv-deps fmnist-data
	# DS_BUILD_OPS=0: DeepSpeed builds its few CPU ops on first use (g++, ~24 s, cached).
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -e '.[dev,deepspeed,ffcv,slurm,trackers,search]'
	# torchattacks only for the tests' cross-checks; --no-deps because it pins an old
	# requests (see README, "Dependencies").
	$(BIN)/python -m pip install --no-deps 'torchattacks==3.5.1'
	touch $(FULL)

# ACCELERATE_USE_CPU=1 + --multi_gpu really starts 2 gloo processes on CPU
# (`--cpu --num_processes 2` silently starts ONE). One thread per process on 2 cores.
# --log_dir /dev/null: otherwise torchrun leaves an empty /tmp/torchelastic_* per launch.
demo: $(BASE)
	OMP_NUM_THREADS=1 ACCELERATE_USE_CPU=1 $(BIN)/accelerate launch --multi_gpu \
	  --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
	  --main_process_port 0 --log_dir /dev/null distadv/train.py recipe=demo $(ARGS)

# The tests' SLURM (munge, slurmctld, slurmdbd + MariaDB, and two nodes: a slurmd each in its
# own network namespace, tests/test_multinode.py); idempotent, ~15 s the first time (apt),
# ~0.2 s when it is already up. `slurm/local/start.sh` alone: one node on loopback.
slurm-up:
	slurm/local/start.sh --nodes 2

slurm-down:
	slurm/local/stop.sh

test: $(FULL) fmnist-data slurm-up
	# one thread per xdist worker: 2 workers on 2 cores, no oversubscription
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n 2 --durations=15 $(ARGS)
