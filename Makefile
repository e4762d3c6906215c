# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(abspath ../shared/data)
RUNS   ?= runs
SIZE   ?= 128
EPOCHS ?= 10

export FACE_DATA_DIR := $(DATA)

.PHONY: setup test test-tf test-jax demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# The whole suite on TensorFlow, then everything backend-dependent again on JAX.
test: setup test-tf test-jax

test-tf: setup
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q --durations=10 tests

test-jax: setup
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --durations=10 -m backend tests

# Prepare 300-W + YouTube68, train MobileNetV2 (offline ImageNet weights), evaluate against dlib.
demo: setup
	$(BIN)/python datagen.py prepare 300w --source $(DATA)/300w youtube68 --source $(DATA)/youtube68 \
		--size $(SIZE) --out dataset/ibug$(SIZE)
	$(BIN)/python train.py mobilenetv2 --data dataset/ibug$(SIZE)_train.npz --val-fraction 0.1 \
		--weights $(abspath ../shared/weights)/mobilenet_v2_imagenet_notop.weights.h5 \
		--epochs $(EPOCHS) --schedule cosine --lr 5e-4 --loss wing --patience 4 --run-dir $(RUNS)/mobilenetv2-$(SIZE)
	$(BIN)/python evaluate.py $(RUNS)/mobilenetv2-$(SIZE) --data dataset/ibug$(SIZE)_test.npz \
		--baseline dlib --out results/demo-$(SIZE)

clean:
	rm -rf $(VENV) .pytest_cache
