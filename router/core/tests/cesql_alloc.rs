//! Evaluating a compiled CESQL expression allocates nothing unless a string function must
//! build a new string. A counting global allocator proves it.
//!
//! Implementing `GlobalAlloc` takes `unsafe`, which the workspace denies; this test binary
//! allows it for the one impl below, which only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use triggerfish_core::cesql::Expression;
use triggerfish_core::event::{AttrValue, Attributes};

/// Counts the allocations made by the current thread, so that other test threads (and the
/// harness) cannot disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may already be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`. The counter is a const-init
// thread-local `Cell` without a destructor, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The number of allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// A fixed event that looks its attributes up without allocating.
struct Event {
    ty: &'static str,
    subject: Option<&'static str>,
}

impl Attributes for Event {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        match name {
            "specversion" => Some(AttrValue::Str("1.0")),
            "id" => Some(AttrValue::Str("A234-1234-1234")),
            "source" => Some(AttrValue::Str("/orders/eu/42")),
            "type" => Some(AttrValue::Str(self.ty)),
            "subject" => self.subject.map(AttrValue::Str),
            "myint" => Some(AttrValue::Int(7)),
            "mybool" => Some(AttrValue::Bool(true)),
            "num" => Some(AttrValue::Str("15")),
            "padded" => Some(AttrValue::Str("  Orders  ")),
            _ => None,
        }
    }
}

const MATCHING: Event = Event {
    ty: "com.example",
    subject: Some("order-42"),
};
const OTHER: Event = Event {
    ty: "com.example.other",
    subject: None,
};

/// Compiles `src` (allocating, as compiling does), then checks that evaluating it against
/// each event allocates nothing and returns `expected`.
fn assert_allocation_free(src: &str, expected: [bool; 2]) {
    let expression = Expression::compile(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    for (event, expected) in [&MATCHING, &OTHER].into_iter().zip(expected) {
        let mut matched = None;
        let n = allocations(|| {
            let evaluation = expression.evaluate(event);
            matched = Some(evaluation.is_match());
            drop(evaluation);
        });
        assert_eq!(n, 0, "{src:?} allocated {n} times");
        assert_eq!(matched, Some(expected), "{src:?}");
        assert_eq!(
            allocations(|| assert_eq!(expression.matches(event), expected)),
            0
        );
    }
}

#[test]
fn evaluation_does_not_allocate() {
    // The canonical filter.
    assert_allocation_free(
        "type = 'com.example' AND source LIKE '/orders/%' AND myint > 5 AND EXISTS subject",
        [true, false],
    );
    // Implicit casts in both directions, compared without building strings.
    assert_allocation_free(
        "myint = '7' AND '7' = myint AND 'TRUE' = mybool AND num = 15 AND num > myint",
        [true, true],
    );
    assert_allocation_free("myint LIKE '_' AND mybool LIKE 't%'", [true, true]);
    assert_allocation_free(
        "myint IN ('6', '7') AND source NOT IN (type, 'x') AND type IN ('com.example', 'y')",
        [true, false],
    );
    assert_allocation_free(
        "type LIKE '%.other' OR subject LIKE 'order-__' OR type LIKE 'x%y%z'",
        [true, true],
    );
    assert_allocation_free(
        "type LIKE 'c%m%e' AND source LIKE '%ord_rs%4_'",
        [true, false],
    );
    // String functions that can return a slice of their input, or a number.
    assert_allocation_free(
        "LENGTH(source) = 13 AND LEFT(type, 3) = 'com' AND RIGHT(source, 2) = '42' \
         AND SUBSTRING(source, 2, 6) = 'orders' AND TRIM(padded) = 'Orders' \
         AND LOWER(source) = source AND UPPER('ABC') = 'ABC' AND CONCAT(type) = type \
         AND LENGTH(myint) = 1 AND ABS(-myint) = 7 AND INT(num) = 15 AND BOOL(mybool) \
         AND IS_INT(num) AND IS_BOOL(mybool) AND STRING(mybool) = 'true'",
        [true, true],
    );
    // Errors carry no heap data either.
    assert_allocation_free("missing = 'x'", [false, false]);
    assert_allocation_free("NOT 10", [false, false]);
    assert_allocation_free("myint / 0 = 0", [false, false]);
    assert_allocation_free("SUBSTRING(type, 100) = ''", [false, false]);
    assert_allocation_free("subject = 'order-42'", [true, false]);
}

#[test]
fn the_counter_counts() {
    // Functions that build a new string do allocate; this also shows the counter works.
    let expression = Expression::compile("UPPER(type) = 'COM.EXAMPLE'").expect("compiles");
    let mut matched = false;
    let n = allocations(|| matched = expression.matches(&MATCHING));
    assert!(matched);
    assert!(n > 0);
    let n = allocations(|| drop(Expression::compile("CONCAT(type, 'x')")));
    assert!(n > 0);
}
