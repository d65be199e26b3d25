;; counter — the smallest Sojourn object, hand-written in WAT.
;;
;; Field `count` (int, min 0, monotonic). Every tick increments it and asks to run again in
;; 100 ms. The number of ticks this instance has run lives only in the mutable wasm global
;; $ticks (not in a field), so a snapshot must capture globals for it to survive.
;;
;; Messages (text), all consumed (election 0):
;;   "reset"  stages count = 0; unless count is already 0 the host REJECTS the entry because
;;            `count` is monotonic (nothing applies; last_rejection reports it next entry)
;;   "ticks"  emits the decimal value of $ticks (no field write)
;;   other    count + 1
(module
  (import "sojourn" "field_get_i64" (func $field_get_i64 (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $field_set_i64 (param i32 i32 i64)))
  (import "sojourn" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "sojourn" "emit" (func $emit (param i32 i32)))

  (memory (export "memory") 1 1)

  ;; ticks run by this instance since creation (persisted only by snapshots of globals)
  (global $ticks (mut i64) (i64.const 0))

  ;; 0..5: field name; 16..21: "reset"; 32..37: "ticks";
  ;; 64..127: message buffer; 128..159: number formatting scratch
  (data (i32.const 0) "count")
  (data (i32.const 16) "reset")
  (data (i32.const 32) "ticks")

  (func $bump
    (call $field_set_i64 (i32.const 0) (i32.const 5)
      (i64.add (call $field_get_i64 (i32.const 0) (i32.const 5)) (i64.const 1))))

  ;; 1 if the 5 bytes at $a equal the 5 bytes at $b
  (func $eq5 (param $a i32) (param $b i32) (result i32)
    (i32.and
      (i32.eq (i32.load (local.get $a)) (i32.load (local.get $b)))
      (i32.eq (i32.load8_u offset=4 (local.get $a)) (i32.load8_u offset=4 (local.get $b)))))

  (func (export "sojourn_tick") (param $now_ms i64) (result i64)
    (global.set $ticks (i64.add (global.get $ticks) (i64.const 1)))
    (call $bump)
    (i64.const 100))

  (func (export "sojourn_on_message") (param $len i32) (result i32)
    (local $v i64)
    (local $p i32)
    (if (i32.eq (local.get $len) (i32.const 5))
      (then
        (drop (call $msg_read (i32.const 64) (i32.const 5)))
        (if (call $eq5 (i32.const 64) (i32.const 16))
          (then
            (call $field_set_i64 (i32.const 0) (i32.const 5) (i64.const 0))
            (return (i32.const 0))))
        (if (call $eq5 (i32.const 64) (i32.const 32))
          (then
            ;; format $ticks as decimal, right-aligned ending at 160
            (local.set $v (global.get $ticks))
            (local.set $p (i32.const 160))
            (loop $digits
              (local.set $p (i32.sub (local.get $p) (i32.const 1)))
              (i64.store8 (local.get $p)
                (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
              (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
              (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
            (call $emit (local.get $p) (i32.sub (i32.const 160) (local.get $p)))
            (return (i32.const 0))))))
    (call $bump)
    (i32.const 0)))
