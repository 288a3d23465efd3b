;; Spins forever: stopped by metering (or the wall time).
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))
