# Every target sets itself up: a fresh machine needs only python3, a C++ compiler and cmake.
# The virtualenv sees system site-packages so that a machine with torch already installed
# (a GPU machine) keeps its torch; elsewhere torch 2.13.0 (CPU) is installed into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ubs-installed
TORCH_PIN ?= torch==2.13.0
NATIVE_SOURCES := $(shell find csrc -type f) CMakeLists.txt setup.py pyproject.toml
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: install demo test test-interpret test-gpu bench reproduce checkstyle format clean clean-all

install: $(STAMP)

$(STAMP): $(NATIVE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_PIN)"
	$(PY) -m pip install "setuptools>=64" wheel "cmake>=3.18" ninja
	$(PY) -m pip install --no-build-isolation -e ".[test,bench,dev,lightning,repro]"
	$(PY) -c "import ubs_kernels as u; print(u.build_info())"
	touch $@

demo: $(STAMP)
	$(PY) python/demo.py

# The whole CPU suite; Triton kernels run under the interpreter (test-interpret) as well.
test: $(STAMP)
	$(PYTEST) tests
	$(MAKE) --no-print-directory test-interpret

# Triton kernels on the CPU (TRITON_INTERPRET=1), small shapes; exit 5 = no such tests yet.
test-interpret: $(STAMP)
	TRITON_INTERPRET=1 $(PYTEST) -m interpreter tests || [ $$? -eq 5 ]

# Needs a CUDA device; exit 5 = no GPU tests collected.
test-gpu: $(STAMP)
	$(PYTEST) -m gpu tests || [ $$? -eq 5 ]

bench: $(STAMP)
	$(PY) bench/bench_observe.py --out bench/results
	$(PY) bench/bench_label_mi.py --out bench/results
	$(PY) bench/bench_uncertainty.py --out bench/results
	$(PY) bench/bench_selection_log_probs.py --out bench/results
	$(PY) bench/bench_selector.py --out bench/results
	$(PY) bench/plot.py bench/results

# The paper's experiment on the small MULAN datasets (python/results/README.md has every command).
reproduce: $(STAMP)
	$(PY) python/reproduce.py --datasets emotions scene yeast --folds 5 --epochs 100 --out python/results

checkstyle: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

clean:
	rm -rf build *.egg-info ubs_kernels/_C*.so .pytest_cache .ruff_cache .hypothesis $(STAMP)

clean-all: clean
	rm -rf $(VENV)
