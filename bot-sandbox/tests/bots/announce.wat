;; Prints one action, whatever the event: a message to alice@example.org
;; by address (allowed once she wrote to the bot 1:1), which a scheduled
;; run may send too.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"action\":\"send\",\"text\":\"scheduled hello\",\"to\":\"alice@example.org\"}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 68))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
