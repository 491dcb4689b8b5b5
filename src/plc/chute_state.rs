//! The live state of every chute, readable from many threads without locks.
//!
//! One `AtomicU8` per possible chute number (65,536 bytes), read and written with
//! `Relaxed` ordering: a resolver worker may see a change a moment late, which is
//! harmless because the PLC aborts a divert into a full chute anyway. The PLC link's
//! thread writes it from `ChuteStatusChanged` events; workers read it to steer parcels to
//! alternates. It does not decide what to do with an unavailable chute.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::decision::ChuteNumber;

use super::telegram::ChuteState;

/// Number of entries: every `ChuteNumber` has one.
pub const CHUTES: usize = 1 << 16;

const _: () = assert!(CHUTES == ChuteNumber::MAX as usize + 1);

/// Shared table of chute states; every chute starts `Available`.
pub struct ChuteStateTable {
    states: Box<[AtomicU8]>,
}

impl std::fmt::Debug for ChuteStateTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChuteStateTable")
            .field("unavailable", &self.unavailable_count())
            .finish()
    }
}

impl Default for ChuteStateTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ChuteStateTable {
    /// A table with every chute available.
    pub fn new() -> Self {
        ChuteStateTable {
            states: (0..CHUTES)
                .map(|_| AtomicU8::new(ChuteState::Available.code()))
                .collect(),
        }
    }

    /// The chute's current state.
    #[inline]
    pub fn get(&self, chute: ChuteNumber) -> ChuteState {
        self.states
            .get(usize::from(chute))
            .map(|state| state.load(Ordering::Relaxed))
            .and_then(ChuteState::from_code)
            .unwrap_or(ChuteState::Available)
    }

    /// Whether parcels may be diverted to the chute.
    #[inline]
    pub fn is_available(&self, chute: ChuteNumber) -> bool {
        self.get(chute) == ChuteState::Available
    }

    /// Record the chute's new state; returns the previous one.
    pub fn set(&self, chute: ChuteNumber, state: ChuteState) -> ChuteState {
        self.states
            .get(usize::from(chute))
            .map(|slot| slot.swap(state.code(), Ordering::Relaxed))
            .and_then(ChuteState::from_code)
            .unwrap_or(ChuteState::Available)
    }

    /// Every chute that is not available, with its state, in chute order (a full scan of
    /// the table; for metrics, not the hot path).
    pub fn unavailable(&self) -> impl Iterator<Item = (ChuteNumber, ChuteState)> + '_ {
        (0..=ChuteNumber::MAX).filter_map(|chute| {
            let state = self.get(chute);
            (state != ChuteState::Available).then_some((chute, state))
        })
    }

    /// Forget every state: all chutes available (a PLC that restarted announces the
    /// ones that are not).
    pub fn set_all_available(&self) {
        for state in self.states.iter() {
            state.store(ChuteState::Available.code(), Ordering::Relaxed);
        }
    }

    /// How many chutes are not available (a full scan; for metrics, not the hot path).
    pub fn unavailable_count(&self) -> usize {
        self.states
            .iter()
            .filter(|state| state.load(Ordering::Relaxed) != ChuteState::Available.code())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_get_every_state_at_the_edges() {
        let table = ChuteStateTable::new();
        for chute in [0, 1, 999, u16::MAX] {
            assert_eq!(table.get(chute), ChuteState::Available);
            for state in ChuteState::ALL {
                table.set(chute, state);
                assert_eq!(table.get(chute), state);
            }
        }
        assert_eq!(table.unavailable_count(), 4);
        let unavailable: Vec<ChuteNumber> = table.unavailable().map(|(chute, _)| chute).collect();
        assert_eq!(unavailable, vec![0, 1, 999, u16::MAX]);
        assert_eq!(table.set(999, ChuteState::Available), ChuteState::Disabled);
        assert!(table.is_available(999));
        assert!(!table.is_available(1));
        table.set_all_available();
        assert_eq!(table.unavailable_count(), 0);
    }

    #[test]
    fn readers_on_other_threads_see_writes() {
        let table = std::sync::Arc::new(ChuteStateTable::new());
        table.set(42, ChuteState::Full);
        let reader = std::sync::Arc::clone(&table);
        let seen = std::thread::spawn(move || reader.get(42)).join().ok();
        assert_eq!(seen, Some(ChuteState::Full));
    }
}
