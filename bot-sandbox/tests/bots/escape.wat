;; Tries to reach outside: open a file, accept on a socket, read a
;; descriptor it was not given, and count the environment. Prints the
;; errno of each (and the environment count) as bytes "76 76 8 3\n".
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "/etc/passwd")
  ;; writes the decimal of $v followed by byte $sep at $at; returns next position
  (func $num (param $at i32) (param $v i32) (param $sep i32) (result i32)
    (if (i32.ge_u (local.get $v) (i32.const 10))
      (then
        (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $v) (i32.const 10))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))))
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
    (i32.store8 (i32.add (local.get $at) (i32.const 1)) (local.get $sep))
    (i32.add (local.get $at) (i32.const 2)))
  (func (export "_start")
    (local $at i32)
    (local.set $at (i32.const 1000))
    (local.set $at (call $num (local.get $at)
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 11) (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 100))
      (i32.const 32)))
    (local.set $at (call $num (local.get $at) (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 100)) (i32.const 32)))
    (i32.store (i32.const 0) (i32.const 500))
    (i32.store (i32.const 4) (i32.const 10))
    (local.set $at (call $num (local.get $at) (call $fd_read (i32.const 5) (i32.const 0) (i32.const 1) (i32.const 100)) (i32.const 32)))
    (drop (call $environ_sizes_get (i32.const 100) (i32.const 104)))
    (local.set $at (call $num (local.get $at) (i32.load (i32.const 100)) (i32.const 10)))
    (i32.store (i32.const 0) (i32.const 1000))
    (i32.store (i32.const 4) (i32.sub (local.get $at) (i32.const 1000)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))))
