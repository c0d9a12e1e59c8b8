# Every target creates or refreshes .venv idempotently, then does its job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test browser bench readme-figures clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,ray]'
	@touch $(STAMP)

# A pool of one worker per core: the same results as a serial run (tests/test_executors.py), in less time.
demo: $(STAMP)
	$(VENV)/bin/transferlens run --executor process

# Headless Chromium for tests/test_report_browser.py, installed when this machine can (root + apt);
# otherwise that test is skipped with its reason. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 || \
	  echo "note: could not install chromium; tests/test_report_browser.py will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_alpha.py
	$(PY) benchmarks/bench_exact.py
	$(PY) benchmarks/bench_threads.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_estimators.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_gpu.py

# Run the experiments the README quotes and regenerate its measured tables from them.
readme-figures: $(STAMP)
	rm -rf runs/readme-e2 runs/readme-e2-paper runs/readme-e1 runs/readme-select runs/readme-e4 runs/readme-e5 runs/readme-e3 runs/readme-e6
	$(VENV)/bin/transferlens run --out runs/readme-e2
	$(VENV)/bin/transferlens run --preset paper --out runs/readme-e2-paper
	$(VENV)/bin/transferlens run synthetic --out runs/readme-e1
	$(VENV)/bin/transferlens select --out runs/readme-select --target examples/target_rotate.npz --verify 5 \
	  --candidates $(foreach n,plain blur flip invert untrained,$(n)=examples.digits_models:small_mlp@examples/weights/$(n).safetensors)
	$(VENV)/bin/transferlens run selection --out runs/readme-e4
	$(VENV)/bin/transferlens run robust --out runs/readme-e5
	$(VENV)/bin/transferlens run overlap --out runs/readme-e3
	$(VENV)/bin/transferlens run distill --out runs/readme-e6
	$(PY) tools/readme_figures.py --e2 runs/readme-e2 --e2-paper runs/readme-e2-paper --e1 runs/readme-e1 \
	  --select runs/readme-select --e4 runs/readme-e4 --e5 runs/readme-e5 --e3 runs/readme-e3 --e6 runs/readme-e6

clean:
	rm -rf $(VENV) runs .pytest_cache
