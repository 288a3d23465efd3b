#!/bin/sh
# Builds the JavaScript engine of bot.js bots (QuickJS for wasm32-wasip1) and
# refreshes bots/js-engine/engine.wasm, which the bot daemon has built in.
# Needs: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32;
#        rustup target add wasm32-wasip1.
# QuickJS's C is compiled with Debian's clang and wasi-libc (rquickjs would
# otherwise download a WASI SDK).
set -eu
cd "$(dirname "$0")"
export RQUICKJS_SYS_NO_WASI_SDK=1
export CC_wasm32_wasip1="${CC_wasm32_wasip1:-clang}"
export AR_wasm32_wasip1="${AR_wasm32_wasip1:-llvm-ar}"
# wasi-stack.h keeps QuickJS's stack limit on under WASI (see there).
export CFLAGS_wasm32_wasip1="${CFLAGS_wasm32_wasip1:---target=wasm32-wasi -include $(pwd)/wasi-stack.h}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-../../target/bots}"
cargo build --release --locked --target wasm32-wasip1
cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/chatmail-js-engine.wasm" engine.wasm
echo "bots/js-engine/engine.wasm: $(wc -c < engine.wasm) bytes"
