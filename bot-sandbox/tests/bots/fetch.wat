;; Asks the host for https://example.org/ and prints "refused" (-1),
;; "failed" (-2) or "fetched".
(module
  (import "chatmail" "fetch" (func $fetch (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "https://example.org/")
  (data (i32.const 200) "refused\n")
  (data (i32.const 210) "failed\n")
  (data (i32.const 220) "fetched\n")
  (func (export "_start")
    (local $status i32)
    (local.set $status (call $fetch (i32.const 100) (i32.const 20) (i32.const 1000) (i32.const 100) (i32.const 90)))
    (if (i32.eq (local.get $status) (i32.const -1))
      (then (i32.store (i32.const 0) (i32.const 200)) (i32.store (i32.const 4) (i32.const 8)))
      (else (if (i32.eq (local.get $status) (i32.const -2))
        (then (i32.store (i32.const 0) (i32.const 210)) (i32.store (i32.const 4) (i32.const 7)))
        (else (i32.store (i32.const 0) (i32.const 220)) (i32.store (i32.const 4) (i32.const 8))))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
