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
# One try and a short timeout: offline, a failed install falls back at once (see $(STAMP)).
PIP_QUIET := --retries 1 --timeout 10
# pytest-xdist (a test extra; a GPU image has it too): the suite on every core.
XDIST = $(shell $(PY) -c "import xdist" 2>/dev/null && echo "-n $(JOBS)")
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install demo test test-interpret test-gpu bench microbench reproduce checkstyle format clean clean-all

install: $(STAMP)

# A virtualenv made from an interpreter that is itself a virtualenv (a GPU image's torch env)
# sees the base interpreter's packages, not its parent's: the .pth file adds the parent's.
# Without network (a GPU machine), the extras cannot be installed: the package is then built
# offline against what is there, and the tests of a missing extra skip, saying which.
$(STAMP): $(NATIVE_SOURCES)
	test -x $(PY) || { { $(PYTHON) -m venv --system-site-packages $(VENV) || \
	    { rm -rf $(VENV); $(PYTHON) -m venv --system-site-packages --without-pip $(VENV); }; } && \
	  $(PYTHON) -c "import site; print(*site.getsitepackages(), sep=chr(10))" \
	    > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/ubs_parent_env.pth"; }
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_PIN)"
	$(PY) -m pip install $(PIP_QUIET) "setuptools>=64" wheel "cmake>=3.18" ninja || \
	  echo "make: build tools not installed (no network?): using those that are there"
	$(PY) -m pip install $(PIP_QUIET) --no-build-isolation -e ".[test,bench,dev,lightning,repro]" || { \
	  echo "make: the extras could not be installed (no network?): building ubs_kernels offline"; \
	  $(PY) -m pip install --no-index --no-deps --no-build-isolation -e .; }
	$(PY) -c "import ubs_kernels as u; print(u.build_info())"
	touch $@

demo: $(STAMP)
	$(PY) python/demo.py

# The whole CPU suite; Triton kernels run under the interpreter (test-interpret) as well.
test: $(STAMP)
	$(PYTEST) $(XDIST) tests
	$(MAKE) --no-print-directory test-interpret

# Triton kernels on the CPU (TRITON_INTERPRET=1), small shapes; exit 5 = no such tests yet.
test-interpret: $(STAMP)
	TRITON_INTERPRET=1 $(PYTEST) $(XDIST) -m interpreter tests || [ $$? -eq 5 ]

# On a GPU machine: the whole suite (CPU and CUDA tests, in the CUDA build), in parallel where
# pytest-xdist is installed. scripts/gpu_check.sh runs it with the GPU benchmarks.
test-gpu: $(STAMP)
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: torch sees no CUDA device')"
	$(PYTEST) $(XDIST) tests

bench: $(STAMP)
	$(PY) bench/bench_observe.py --out bench/results
	$(PY) bench/bench_label_mi.py --out bench/results
	$(PY) bench/bench_uncertainty.py --out bench/results
	$(PY) bench/bench_selection_log_probs.py --out bench/results
	$(PY) bench/bench_selector.py --out bench/results
	$(PY) bench/plot.py bench/results

# Kernel microbenchmarks (bench/microbench, pytest-benchmark; not part of `make test`): every op x
# backend x CPU instruction-set path at a few sizes, compared with this machine's committed
# baseline. MICROBENCH_ARGS: --device cuda, --save (a new baseline), --fail min:15%.
microbench: $(STAMP)
	$(PY) bench/microbench/run.py $(MICROBENCH_ARGS)

# The paper's experiment on the small MULAN datasets, into out/reproduce (git-ignored; a run there
# refuses to touch earlier results without --resume). python/results/README.md has every command.
reproduce: $(STAMP)
	$(PY) python/reproduce.py --datasets emotions scene yeast --folds 5 --epochs 100 --out out/reproduce

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
