# Quick start (Debian 12, as root):
#   make run    a complete local chatmail relay on 127.0.0.1 (Ctrl-C stops it)
#   make test   every test: unit, end-to-end through Postfix and Dovecot (also against
#               Debian 13's Dovecot 2.4 in a debootstrap'd root), Delta Chat core,
#               and the Debian packages installed into clean Debian 12 and 13 roots

CARGO ?= cargo
VENV ?= .venv
PYTHON ?= python3
LOCAL_RELAY := target/debug/chatmail-local-relay

.PHONY: run test setup build venv unit-test e2e-test clean bots js-engine debs package-test test-trixie

run: setup build
	$(LOCAL_RELAY)

test: setup build venv
	$(CARGO) test --workspace --locked
	CHATMAIL_LOCAL_RELAY=$(CURDIR)/$(LOCAL_RELAY) $(VENV)/bin/pytest tests/e2e
	$(MAKE) package-test
	$(MAKE) test-trixie

# The end-to-end suites that exercise Dovecot, against Debian 13's Dovecot
# 2.4 in a debootstrap'd root (the host's run above covers 2.3).
test-trixie: setup
	$(CARGO) build --workspace --locked
	scripts/test-trixie.sh

# The Debian packages (release build): for Debian 12 into target/debs/bookworm/,
# for Debian 13 (Dovecot 2.4) into target/debs/trixie/.
debs: setup
	packaging/build-debs.sh bookworm
	packaging/build-debs.sh trixie

# Installs them with apt into a debootstrap'd Debian 12 root and a Debian 13
# root and checks the relay in each (uses ports 25, 465, 587, 143 and 993 of
# 127.0.0.1 while it runs).
package-test: debs
	packaging/test-install.sh bookworm
	packaging/test-install.sh trixie

setup:
	@./scripts/setup-host.sh

build:
	$(CARGO) build --workspace --locked

# Python side of the end-to-end tests: Delta Chat core and its client, pinned.
venv: $(VENV)/.installed

$(VENV)/.installed: tests/e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

# The example bots, rebuilt for wasm32-wasip1 (needs `rustup target add
# wasm32-wasip1`). The built modules are committed as bots/*/bot.wasm, so
# the tests need no wasm toolchain.
bots:
	for bot in echo counter; do \
	  CARGO_TARGET_DIR=$(CURDIR)/target/bots $(CARGO) build --release --locked --target wasm32-wasip1 --manifest-path bots/$$bot/Cargo.toml && \
	  cp target/bots/wasm32-wasip1/release/chatmail-$$bot-bot.wasm bots/$$bot/bot.wasm || exit 1; \
	done

# The JavaScript engine of bot.js bots (QuickJS for wasm32-wasip1, built
# from bots/js-engine/ with Debian's clang, lld and wasi-libc: apt-get
# install clang lld wasi-libc libclang-rt-dev-wasm32; rustup target add
# wasm32-wasip1). The module is committed as bots/js-engine/engine.wasm
# (the bot daemon has it built in), so the tests need no wasm toolchain.
js-engine:
	bots/js-engine/build.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV)
