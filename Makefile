# clos_web: `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8080
STAMP := $(VENV)/.installed

.PHONY: install test demo hello bench soak clean

install: $(STAMP)

# Re-run pip only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# Debian programs the tests drive: curl (a real client), chromium (browser tests) and
	@# redis-server (with redis-cli: the Redis client and cluster tests).
	@command -v curl >/dev/null && command -v chromium >/dev/null && \
		command -v redis-server >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends curl chromium \
			redis-server; } \
		|| echo "could not install curl/chromium/redis-server: tests that need them will be skipped"
	touch $(STAMP)

test: install
	$(PY) -m pytest -p no:cacheprovider

demo: install
	$(PY) -m examples.tabletop --port $(PORT)

hello: install
	$(PY) examples/hello.py --port $(PORT)

bench: install
	bash bench/run.sh $(ARGS)

# 30 minutes of mixed load against one examples/hello.py (bench/README.md, "Soak"); not a test.
soak: install
	bash bench/setup.sh && bench/.venv/bin/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
