;; Copies standard input to standard output until EOF, then exits 0 (like `cat`).
;;   echo hi | nekton run -i examples/echo.wat
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (loop $more
      ;; read into 4096..12288 (iovec at 16), count at 24
      (i32.store (i32.const 16) (i32.const 4096))
      (i32.store (i32.const 20) (i32.const 8192))
      (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
      (local.set $n (i32.load (i32.const 24)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          ;; write what was read (iovec at 32), then read again
          (i32.store (i32.const 32) (i32.const 4096))
          (i32.store (i32.const 36) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
          (br $more))))))
