# edgevm: `make demo` and `make test` set up everything they need in .venv/ first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test stress fuzz bench lint clean

$(STAMP): pyproject.toml setup.py build.py $(wildcard native/*/*.c native/*/*.h native/*/*.cdef)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,server,examples,replay]'
	@touch $@

demo: $(STAMP)
	$(PY) examples/demo.py

test: lint
	$(PY) -m pytest -q tests

# The long versions of the kill loops (make test runs short ones).
stress: $(STAMP)
	EDGEVM_STRESS=1 $(PY) -m pytest -q tests/isolation/test_stress.py tests/update/test_crash.py tests/host/test_snapshot_crash.py \
		tests/data/test_store_crash.py

# The native-ops fuzz suite, long, against vm.ml._ops built with -fsanitize=address,undefined
# (into build/ops-asan-*; make test runs a short version). FUZZ_EXAMPLES: hypothesis examples per test.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	$(PY) tests/ml/fuzz_sanitized.py --examples $(FUZZ_EXAMPLES)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-* build *.egg-info vm/*/*.so vm/ml/_ops.c vm/*/*.o examples/out
