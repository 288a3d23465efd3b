//! The session slots this process holds (see `chatmail_config::sessions`
//! for the slot scheme, shared with chatmail-auth's check at login).

use std::collections::HashMap;
use std::sync::Mutex;

pub use chatmail_config::sessions::{acquire, counts, Acquired, Slot};

/// Slots held by this process, by the mail user they belong to (its
/// address in memory, which is unique while the user lives).
static HELD: Mutex<Option<HashMap<usize, Slot>>> = Mutex::new(None);

pub fn hold(user: usize, slot: Slot) {
    if let Ok(mut held) = HELD.lock() {
        held.get_or_insert_with(HashMap::new).insert(user, slot);
    }
}

/// Frees the user's slot (its session ends).
pub fn release(user: usize) {
    if let Ok(mut held) = HELD.lock() {
        if let Some(map) = held.as_mut() {
            map.remove(&user);
        }
    }
}

/// Releases the user's slot when dropped.
#[derive(Debug)]
pub struct ReleaseOnDrop(pub usize);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_slots_are_released_by_user() {
        let home = tempfile::tempdir().expect("tempdir");
        let take = || match acquire(home.path(), 2).expect("acquire") {
            Acquired::Slot(slot) => slot,
            Acquired::AllBusy => panic!("all busy"),
        };
        hold(1, take());
        hold(2, take());
        assert!(matches!(acquire(home.path(), 2).expect("acquire"), Acquired::AllBusy));
        drop(ReleaseOnDrop(1));
        let slot = take();
        assert_eq!(slot.number, 0, "user 1's slot is free again");
        release(2);
        release(3); // never held: nothing happens
    }
}
