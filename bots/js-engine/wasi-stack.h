/* Force-included (clang -include) into QuickJS's C files by build.sh.
 *
 * QuickJS-ng turns its stack limit off when compiled for WASI (__wasi__),
 * so deep recursion would run the module out of wasm stack: a trap
 * instead of a RangeError the bot can catch. This header includes the
 * system headers QuickJS uses while __wasi__ is still defined (wasi-libc
 * needs it), then undefines it, so that QuickJS keeps its limit
 * (JS_SetMaxStackSize, measured with __builtin_frame_address on the
 * shadow stack in linear memory). Nothing else in QuickJS's core depends
 * on __wasi__. */
#include <alloca.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#undef __wasi__
