# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(FACE_DATA_DIR),$(abspath ../shared/data))
RUNS   ?= runs
SIZE   ?= 128
CONFIG ?= configs/demo.json
# make demo scores the shipped model beside its own run (same test faces, held out from both) where its input size fits
SHIPPED_MODEL := weights/mobilenetv2-pip-128
SHIPPED := $(if $(filter 128,$(SIZE)),$(SHIPPED_MODEL))
SHIPPED_EXPORT := $(SHIPPED_MODEL)/export/export.json

export FACE_DATA_DIR := $(DATA)

# tcmalloc instead of glibc's (tuned) allocator, opt-in: `make demo TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4`
# after `apt install libtcmalloc-minimal4`. On the issue-19 machine (2-core AMD EPYC without AVX-512, half of training
# CPU time in page faults with glibc as it comes) the tuned glibc trained 2.28x faster than glibc as it came and
# tcmalloc 2.15x (one run); on AVX-512 machines tcmalloc ran at 0.89x and 1.05x of tuned glibc.
# Compare on yours: benchmarks/train_throughput.py --allocator all (docs/training.md#data-feeding).
TCMALLOC ?=
# a path that names no file ran everything on glibc, each process printing ld.so's "cannot be preloaded: ignored"
ifneq ($(TCMALLOC),)
ifeq ($(wildcard $(TCMALLOC)),)
$(error TCMALLOC=$(TCMALLOC): no such file; install it (apt install libtcmalloc-minimal4) and give its path, e.g. /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)
endif
endif
export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD := 1099511627776
WITH_ALLOCATOR := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC))

# Test processes (pytest-xdist). Most tests keep one core busy (model building, tracing, Python), so
# two processes on the 2-core machines finish it in 0.6-0.8x the time of one (docs/results.md#test-suite-timings);
# work stealing hands the remaining tests to whichever process is free (no faster than the default beyond noise there).
# TEST_WORKERS=0 runs it in this process (pytest's own output, pdb).
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: setup test lint face-data test-tf test-jax demo clean

setup: $(VENV)/.installed $(SHIPPED_EXPORT)

# The package, editable, with both backends and the test tools, at the versions pinned in requirements.txt.
$(VENV)/.installed: requirements.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.txt -e ".[tensorflow,jax,dev,onnx,litert,export]"
	touch $@

# The shipped model for ONNX Runtime and LiteRT (photos start without TensorFlow), exported again whenever its weights,
# its config or the environment are newer than the export: a pull that brings new weights into a checkout made before. An export of other weights
# is never used (Keras runs instead), so without this a stale checkout would run slower, not wrong.
$(SHIPPED_EXPORT): $(VENV)/.installed $(SHIPPED_MODEL)/best.weights.h5 $(SHIPPED_MODEL)/config.json
	$(BIN)/python export.py

# Lint, the whole suite on TensorFlow, then everything backend-dependent again on JAX, except the `slow` builds of
# the big stock backbones (Keras's own code: ResNet50, DenseNet121, InceptionV3 took 25-42 s each there).
test: setup lint test-tf test-jax

lint: setup
	$(BIN)/ruff check .

# The suite reads the face data. Say in one line where it is missing: in pytest-xdist's worker processes the
# suite's own check (tests/conftest.py) cannot reach the console.
face-data:
	@test -d "$(DATA)/300w" || { echo "make: real face data not found at $(DATA) (no 300w/ there); give its folder with DATA=... or FACE_DATA_DIR=..., or run only the tests that need none: pytest -m 'not data'" >&2; exit 2; }

test-tf: setup face-data
	$(WITH_ALLOCATOR) KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q $(PARALLEL) --durations=10 tests

test-jax: setup face-data
	$(WITH_ALLOCATOR) KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(PARALLEL) --durations=10 -m "backend and not slow" tests

# Prepare 300-W + YouTube68, train the demo recipe (MobileNetV2 from offline ImageNet weights), evaluate against dlib.
demo: setup
	$(WITH_ALLOCATOR) $(BIN)/python datagen.py prepare 300w --source $(DATA)/300w youtube68 --source $(DATA)/youtube68 \
		--size $(SIZE) --out dataset/ibug$(SIZE)
	$(WITH_ALLOCATOR) $(BIN)/python train.py --config $(CONFIG) --run-dir $(RUNS)/demo-$(SIZE)
	$(WITH_ALLOCATOR) $(BIN)/python evaluate.py $(RUNS)/demo-$(SIZE) $(SHIPPED) --data dataset/ibug$(SIZE)_test.npz \
		--baseline dlib --flip-test --out results/demo-$(SIZE)

clean:
	rm -rf $(VENV) .pytest_cache
