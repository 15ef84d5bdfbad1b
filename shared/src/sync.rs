//! Small synchronisation helpers shared by the binaries.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex that guards plain in-memory state. A panic while it was held cannot leave
/// such state half-written in a way that matters more than stopping would, so a poisoned lock
/// is taken as it is rather than spreading the panic to every later user.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
