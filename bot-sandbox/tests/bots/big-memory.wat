;; Asks for 256 MiB at start: over the memory limit before it runs.
(module
  (memory (export "memory") 4096)
  (func (export "_start")))
