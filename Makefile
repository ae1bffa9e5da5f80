# Quickstart targets. `make test` works on a fresh machine: it creates .venv and installs
# the package with its dev extras first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

DEMO_DIR := runs/demo

.PHONY: install test lint demo bench bench-training

$(BIN)/rlr-video: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/rlr-video

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python tools/bench_estimators.py

bench-training: install
	$(BIN)/python tools/bench_training.py

# Fine-tune the shipped tiny-shapes model with RLR on the CPU (rlr_video/configs/tiny-shapes.yaml), render
# base vs fine-tuned previews (runs/demo/preview/index.html) and compare them on a fixed set.
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/rlr-video train tiny-shapes train.output_dir=$(DEMO_DIR)
	$(BIN)/rlr-video render $(DEMO_DIR)/config.yaml --no-progress --out $(DEMO_DIR)/preview \
		--lora $$(ls -d $(DEMO_DIR)/checkpoints/step-* | tail -n 1)
	$(BIN)/python tools/demo_report.py $(DEMO_DIR)
