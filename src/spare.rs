//! Lists kept for reuse, one of each kind a thread: a list that a message's work fills and
//! empties is taken from its thread's slot and given back when done, so that a message does not
//! cost its allocation. One a thread, not one an owner: a client waiting between messages keeps
//! none.

use std::cell::Cell;
use std::thread::LocalKey;

/// A thread's kept list of one kind: `thread_local!` of `Cell<Vec<T>>`, empty at first.
pub(crate) type Slot<T> = LocalKey<Cell<Vec<T>>>;

/// The list kept in `slot` on this thread, empty, or a new one when none is kept (or another
/// user of the slot, further up this thread's stack, holds it).
pub(crate) fn take<T>(slot: &'static Slot<T>) -> Vec<T> {
    slot.with(Cell::take)
}

/// Keeps `list`, emptied, in `slot` for this thread's next [`take`]. What it still holds is
/// dropped; a list with room for more than `most` items is let go instead, so that one large
/// message does not keep its memory.
pub(crate) fn keep<T>(slot: &'static Slot<T>, mut list: Vec<T>, most: usize) {
    list.clear();
    if list.capacity() <= most {
        slot.with(|kept| kept.set(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static NUMBERS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn a_kept_list_is_taken_again_empty_and_a_large_one_is_let_go() {
        let mut list = take(&NUMBERS);
        list.extend([1, 2, 3]);
        let at = list.as_ptr();
        keep(&NUMBERS, list, 8);
        let again = take(&NUMBERS);
        assert!(
            again.is_empty() && again.as_ptr() == at,
            "the same memory, emptied"
        );
        assert_eq!(take(&NUMBERS).capacity(), 0, "taken: none kept meanwhile");
        keep(&NUMBERS, vec![0; 100], 8);
        assert_eq!(take(&NUMBERS).capacity(), 0, "too large to keep");
    }
}
