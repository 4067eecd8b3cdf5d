# estella: `make train export` trains the default preset and exports it; `make test` runs the suite.
# Variables: PRESET, RUN (run name under runs/), CORPUS (URL or path), OUT (export folder),
# and one per hyper-parameter: CELL (gru or lstm) LAYERS (1-4) UNITS (one value, or a comma list with one
# per layer) DROPOUT EPOCHS EMBEDDING_DIM SEQ_LENGTH BATCH_SIZE LEARNING_RATE
# PATIENCE VALIDATION_FRACTION SEED STEPS_PER_EPOCH VALIDATION_STEPS; DATA (a prepared folder),
# MIXED_PRECISION, DISTRIBUTE (see README, "Training at scale").

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# PRESET is passed only when given, so `make train RUN=x EPOCHS=60` resumes x with its own preset.
PRESET ?=
# `make venv TRAIN_EXTRA=gpu` on a CUDA machine: tensorflow[and-cuda] instead of tensorflow-cpu.
TRAIN_EXTRA ?= train
RUNS ?= runs
CORPUS ?=

# `make export` alone takes the last run that `make train` made, unless RUN is given.
LAST_RUN = $(shell cat $(RUNS)/.last 2>/dev/null)
RUN_GIVEN := $(filter command line environment,$(origin RUN))
RUN ?= $(or $(PRESET),default)
TRAIN_DIR = $(RUNS)/$(RUN)
EXPORT_RUN = $(if $(RUN_GIVEN),$(RUNS)/$(RUN),$(or $(LAST_RUN),$(RUNS)/$(RUN)))
OUT ?=

hp = $(if $($(1)),--$(2) $($(1)))
TRAIN_FLAGS = $(if $(PRESET),--preset $(PRESET)) $(if $(CORPUS),--corpus $(CORPUS)) \
	$(call hp,CELL,cell) $(call hp,LAYERS,layers) $(call hp,UNITS,units) $(call hp,DROPOUT,dropout) \
	$(call hp,EPOCHS,epochs) $(call hp,EMBEDDING_DIM,embedding-dim) \
	$(call hp,SEQ_LENGTH,seq-length) $(call hp,BATCH_SIZE,batch-size) $(call hp,LEARNING_RATE,learning-rate) \
	$(call hp,PATIENCE,patience) $(call hp,VALIDATION_FRACTION,validation-fraction) $(call hp,SEED,seed) \
	$(call hp,STEPS_PER_EPOCH,steps-per-epoch) $(call hp,VALIDATION_STEPS,validation-steps) \
	$(if $(DATA),--data $(DATA)) $(call hp,MIXED_PRECISION,mixed-precision) $(call hp,DISTRIBUTE,distribute)

.PHONY: venv train export test clean-venv
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -e '.[$(TRAIN_EXTRA),dev,jax,serve,micro,ray]'
	$(BIN)/python -m pip install -q --no-deps "$$($(BIN)/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["keras2"][0])')"
	touch $@

train: venv
	$(BIN)/estella train $(TRAIN_DIR) $(TRAIN_FLAGS)
	echo $(TRAIN_DIR) > $(RUNS)/.last

export: venv
	$(BIN)/estella export $(EXPORT_RUN) $(if $(OUT),--out $(OUT)) --force

# The runtime's tests run a second time where TensorFlow is not installed, as on an edge device:
# in $(RUNTIME_VENV) (numpy and the two interpreters), on an export the main virtualenv makes.
# The serving tests run only there: a server is deployed without TensorFlow (and with Ray Serve,
# the [ray] extra, for tests/serve_ray: a local Ray cluster on 127.0.0.1).
RUNTIME_VENV ?= .venv-runtime
# ... and the numpy backend's tests once more with numpy alone (`pip install estella`, no extras).
NUMPY_VENV ?= .venv-numpy
RUNTIME_FIXTURE := .cache/runtime-fixture
# The parity suite runs the TFLite rows again under tflite-runtime 2.14 (numpy<2), which many edge
# devices still run; estella goes in without dependencies, so its own loaders are what is tested.
TFLITE_RUNTIME_VENV ?= .venv-tflite-runtime

test: venv browser c-runtime-deps $(RUNTIME_VENV)/.installed $(TFLITE_RUNTIME_VENV)/.installed $(NUMPY_VENV)/.installed
	ESTELLA_TFLITE_RUNTIME_PYTHON=$(TFLITE_RUNTIME_VENV)/bin/python $(BIN)/python -m pytest -q -m "not slow" \
		--ignore=tests/serve --ignore=tests/serve_ray
	$(MAKE) $(RUNTIME_FIXTURE)/export/manifest.json
	ESTELLA_RUNTIME_EXPORT=$(RUNTIME_FIXTURE)/export $(RUNTIME_VENV)/bin/python -m pytest -q -m "not tensorflow" \
		tests/runtime tests/serve tests/serve_ray
	ESTELLA_RUNTIME_EXPORT=$(RUNTIME_FIXTURE)/export ESTELLA_NUMPY_ONLY=1 $(NUMPY_VENV)/bin/python -m pytest -q \
		-m "not tensorflow" tests/runtime/test_numpy_backend.py tests/runtime/test_numpy_only.py
	$(NUMPY_VENV)/bin/estella generate $(RUNTIME_FIXTURE)/export --backend numpy --prime Pip --chars 80 --seed 1

# The base install alone (`pip install .`: numpy, no interpreter), as a real, non-editable install;
# it is remade when the runtime's sources change.
$(NUMPY_VENV)/.installed: pyproject.toml $(wildcard runtime/*.py runtime/backends/*.py)
	test -x $(NUMPY_VENV)/bin/python || $(PYTHON) -m venv $(NUMPY_VENV)
	$(NUMPY_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(NUMPY_VENV)/bin/python -m pip install -q . 'pytest>=8,<10'
	! $(NUMPY_VENV)/bin/python -c "import onnxruntime" 2>/dev/null
	touch $@

$(RUNTIME_VENV)/.installed: pyproject.toml
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q -e '.[tflite,onnx,dev,serve,micro,ray]'
	! $(RUNTIME_VENV)/bin/python -c "import tensorflow" 2>/dev/null
	touch $@

$(RUNTIME_FIXTURE)/export/manifest.json: $(VENV)/.installed $(wildcard build/*.py export/*.py) tests/runtime/make_fixture_export.py
	$(BIN)/python tests/runtime/make_fixture_export.py $(RUNTIME_FIXTURE)

# `make c-runtime`: the C runtime (runtime/c) into $(C_RUNTIME_BUILD), linked against the libLiteRt.so of
# the virtualenv's ai-edge-litert; tests/c_runtime builds its own copy the same way. Its Debian packages
# (a C compiler, cJSON and OpenSSL's headers) are installed by c-runtime-deps, as `browser` installs chromium.
C_RUNTIME_BUILD ?= .cache/c-runtime
C_RUNTIME_PACKAGES = gcc make libc6-dev libcjson-dev libssl-dev
LITERT_DIR = $(shell $(BIN)/python -c 'import ai_edge_litert, os; print(os.path.dirname(ai_edge_litert.__file__))')
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: c-runtime c-runtime-deps
c-runtime: venv c-runtime-deps
	$(MAKE) -C runtime/c BUILD=$(abspath $(C_RUNTIME_BUILD)) LITERT_DIR=$(LITERT_DIR)
c-runtime-deps:
	command -v gcc >/dev/null && test -f /usr/include/cjson/cJSON.h && test -f /usr/include/openssl/evp.h || \
		{ $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(C_RUNTIME_PACKAGES); }

# The web page's test drives Debian's chromium headless (through playwright, which downloads no browser).
.PHONY: browser
browser:
	command -v chromium >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium; }

.PHONY: tflite-runtime-venv
tflite-runtime-venv: $(TFLITE_RUNTIME_VENV)/.installed
$(TFLITE_RUNTIME_VENV)/.installed: pyproject.toml
	test -x $(TFLITE_RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(TFLITE_RUNTIME_VENV)
	$(TFLITE_RUNTIME_VENV)/bin/python -m pip install -q 'numpy>=1.26,<2' 'tflite-runtime==2.14.0' 'threadpoolctl>=3.5,<4'
	$(TFLITE_RUNTIME_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# `make parity`: the whole matrix (the seed size over 500 steps and the briefly trained default
# preset, which `make test` leaves out as slow, and not CI's 100-step seed size, which the 500 steps
# cover); prints the table and writes PARITY.md.
.PHONY: parity
parity: venv $(TFLITE_RUNTIME_VENV)/.installed
	ESTELLA_TFLITE_RUNTIME_PYTHON=$(TFLITE_RUNTIME_VENV)/bin/python $(BIN)/python -m pytest -q tests/parity \
		-k "not a-short" --parity-table PARITY.md

# `make edge`: the runtime on emulated aarch64 (Cortex-A72 and A76, Raspberry Pi 4 and 5 class) in a
# Debian bookworm arm64 chroot under qemu-user, every device row against the host's Keras reference, for
# two models: one GRU layer of 256 and a stacked LSTM (EDGE_STACK, units per layer); writes EDGE.md.
# Needs root. The root filesystem, wheels, device virtualenvs and fixtures are cached in $(EDGE_CACHE)
# (preparing took 12 minutes from nothing on a busy machine, then seconds; each model's run 2-3
# minutes); see edge/prepare.sh.
EDGE_CACHE ?= $(HOME)/.cache/estella/edge
EDGE_CORPUS ?= $(or $(CORPUS),../shared/data/great-expectations.txt)
EDGE_OUT ?= .cache/edge
EDGE_STACK ?= 64,64
.PHONY: edge
edge: venv
	EDGE_CACHE=$(EDGE_CACHE) EDGE_HOST_PYTHON=$(BIN)/python edge/prepare.sh
	fixture=$$($(BIN)/python edge/make_fixture.py $(EDGE_CACHE)/fixtures --corpus $(EDGE_CORPUS)) && \
		EDGE_CACHE=$(EDGE_CACHE) edge/run.sh "$$fixture" $(EDGE_OUT)/gru cortex-a72 cortex-a76
	fixture=$$($(BIN)/python edge/make_fixture.py $(EDGE_CACHE)/fixtures --corpus $(EDGE_CORPUS) \
			--cell lstm --units $(EDGE_STACK)) && \
		EDGE_CACHE=$(EDGE_CACHE) edge/run.sh "$$fixture" $(EDGE_OUT)/lstm cortex-a72 cortex-a76
	$(BIN)/python edge/report.py $(EDGE_OUT)/gru $(EDGE_OUT)/lstm EDGE.md

# `make quality` writes QUALITY.md from trained runs (train each first, e.g. `make train PRESET=quality
# MIXED_PRECISION=auto`); QUALITY_RUNS names them.
QUALITY_RUNS ?= $(RUNS)/quality $(RUNS)/char-rnn $(RUNS)/micro
.PHONY: quality
quality: venv
	$(BIN)/estella quality $(QUALITY_RUNS) --out QUALITY.md

# `make bench` writes BENCHMARKS.md, bench.json and bench.png (its header gives the last full run's time);
# QUICK=1 runs a few minutes' worth into .cache/bench/quick/ instead.
.PHONY: bench
bench: venv
	$(BIN)/estella bench $(if $(QUICK),--quick)

clean-venv:
	rm -rf $(VENV)
