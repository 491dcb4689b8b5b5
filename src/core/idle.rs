//! How a loop with nothing to do waits: the idle policy, as a pure decision (idle time
//! in, spin or park out). The shells ask it once per empty turn; it does no waiting
//! itself and reads no clock.
//!
//! Spinning before parking saves the wake-up cost (a few microseconds) when work comes
//! back soon, but only when the spinning thread has a core of its own: on a box where the
//! daemon's threads already fill the cores, every spin turn is taken from the scanner
//! side, the PLC or the daemon's other threads. So [`IdleMode::Adaptive`] spins only when
//! the machine has more cores than the daemon has busy threads; [`IdleMode::BusyPoll`]
//! never parks (a dedicated, isolated core); [`IdleMode::Park`] never spins;
//! [`IdleMode::Spin`] always spins first (the behaviour before adaptive waiting).
//!
//! The PLC thread's deferred reads are decided here too ([`IdlePolicy::defer_link_reads`]):
//! while parcels flow, it need not wake for each acknowledgement the PLC sends back, and
//! reads them on the next hand-off instead.

use std::time::Duration;

/// The configured waiting mode (`pipeline.idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Spin `spin_before_park` only when a core is spare, else park at once.
    Adaptive,
    /// Park at once.
    Park,
    /// Spin `spin_before_park`, then park, whatever the cores.
    Spin,
    /// Never park: poll without sleeping. Only for a dedicated core.
    BusyPoll,
}

impl IdleMode {
    /// The mode named in the configuration, if the name is one.
    pub fn from_name(name: &str) -> Option<IdleMode> {
        match name {
            "adaptive" => Some(IdleMode::Adaptive),
            "park" => Some(IdleMode::Park),
            "spin" => Some(IdleMode::Spin),
            "busy_poll" => Some(IdleMode::BusyPoll),
            _ => None,
        }
    }

    /// The configuration name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            IdleMode::Adaptive => "adaptive",
            IdleMode::Park => "park",
            IdleMode::Spin => "spin",
            IdleMode::BusyPoll => "busy_poll",
        }
    }
}

/// Longest a PLC thread that parks leaves the PLC's bytes unread after the last hand-off
/// (see [`IdlePolicy::defer_link_reads`]).
pub const LINK_READ_DEFER_MAX: Duration = Duration::from_millis(5);

/// Once the PLC link's window is full, the PLC thread takes no new decisions until this
/// share of it is free again (1/4; see [`window_refilled`]).
pub const WINDOW_RESUME_DIVISOR: usize = 4;

/// Whether a sender whose window filled up (`waiting`) may send again: once a quarter
/// of the window is free. Sending as each acknowledgement frees one slot would turn a
/// full window into one wake-up, one read and one small write per SORT (measured at 64
/// frames per write: 40-byte writes between 160 KiB ones); waiting for a quarter keeps
/// writes large and wake-ups few. A sender that is not waiting sends whenever there is
/// room.
pub fn window_refilled(waiting: bool, window_free: usize, window_max: usize) -> bool {
    if waiting {
        window_free.saturating_mul(WINDOW_RESUME_DIVISOR) >= window_max
    } else {
        window_free > 0
    }
}

/// What an idle loop does this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    /// Poll without sleeping and come back.
    Spin,
    /// Sleep until an event, a wake or a timer.
    Park,
}

/// The resolved policy: the mode applied to this machine's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// `None`: spin forever (busy-poll). `Some(d)`: spin `d`, then park.
    spin_for: Option<Duration>,
}

impl IdlePolicy {
    /// Resolves `mode` for a machine with `cores_available` cores and a daemon that
    /// keeps `threads_busy` threads running under load (workers, the PLC thread, the
    /// metrics thread). Adaptive spins only when `cores_available > threads_busy`.
    pub fn resolve(
        mode: IdleMode,
        spin_before_park: Duration,
        cores_available: usize,
        threads_busy: usize,
    ) -> IdlePolicy {
        let spin_for = match mode {
            IdleMode::Adaptive if cores_available > threads_busy => Some(spin_before_park),
            IdleMode::Adaptive | IdleMode::Park => Some(Duration::ZERO),
            IdleMode::Spin => Some(spin_before_park),
            IdleMode::BusyPoll => None,
        };
        IdlePolicy { spin_for }
    }

    /// A policy that parks at once (tests, tools).
    pub fn park() -> IdlePolicy {
        IdlePolicy {
            spin_for: Some(Duration::ZERO),
        }
    }

    /// How long the resolved policy spins before parking; `None` for busy-poll.
    pub fn spin_for(self) -> Option<Duration> {
        self.spin_for
    }

    /// Whether the PLC thread may stop waking for the PLC's bytes (acknowledgements,
    /// confirmations, chute states) and read them on its next turn instead. Each
    /// hand-off wakes the thread anyway, so while hand-offs come less than
    /// [`LINK_READ_DEFER_MAX`] apart (`handoff_gap`, the last two) the PLC's answer to
    /// one SORT is read, and acknowledged, with the next SORT in the same turn and the
    /// same write: one wake-up per parcel instead of two. Slower traffic gains nothing
    /// (the thread would wake at the deadline instead), so reads are deferred only
    /// then, until [`LINK_READ_DEFER_MAX`] after the last hand-off, while at least half
    /// the link's window is free, and when the policy parks at once (a spinning thread
    /// turns often enough). The cost: a chute status reaches the decisions up to
    /// [`LINK_READ_DEFER_MAX`] later.
    pub fn defer_link_reads(
        self,
        since_handoff: Duration,
        handoff_gap: Duration,
        window_free: usize,
        window_max: usize,
    ) -> bool {
        self.spin_for == Some(Duration::ZERO)
            && handoff_gap < LINK_READ_DEFER_MAX
            && since_handoff < LINK_READ_DEFER_MAX
            && window_free.saturating_mul(2) >= window_max
    }

    /// What to do after `idle_for` without work.
    pub fn step(self, idle_for: Duration) -> IdleStep {
        match self.spin_for {
            None => IdleStep::Spin,
            Some(limit) if idle_for < limit => IdleStep::Spin,
            Some(_) => IdleStep::Park,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(50);

    #[test]
    fn adaptive_spins_only_with_a_spare_core() {
        // 2 cores, 1 worker + PLC thread + metrics thread: no core to spare.
        let shared = IdlePolicy::resolve(IdleMode::Adaptive, SPIN, 2, 3);
        assert_eq!(shared.step(Duration::ZERO), IdleStep::Park);
        let roomy = IdlePolicy::resolve(IdleMode::Adaptive, SPIN, 8, 3);
        assert_eq!(roomy.step(Duration::from_micros(10)), IdleStep::Spin);
        assert_eq!(roomy.step(SPIN), IdleStep::Park);
        // Equal counts: still no spare core.
        let full = IdlePolicy::resolve(IdleMode::Adaptive, SPIN, 3, 3);
        assert_eq!(full.spin_for(), Some(Duration::ZERO));
    }

    #[test]
    fn the_explicit_modes_ignore_the_cores() {
        let park = IdlePolicy::resolve(IdleMode::Park, SPIN, 64, 3);
        assert_eq!(park.step(Duration::ZERO), IdleStep::Park);
        let spin = IdlePolicy::resolve(IdleMode::Spin, SPIN, 1, 3);
        assert_eq!(spin.step(Duration::from_micros(49)), IdleStep::Spin);
        assert_eq!(spin.step(SPIN), IdleStep::Park);
        let busy = IdlePolicy::resolve(IdleMode::BusyPoll, SPIN, 1, 3);
        assert_eq!(busy.step(Duration::from_secs(3600)), IdleStep::Spin);
        assert_eq!(busy.spin_for(), None);
    }

    #[test]
    fn link_reads_are_deferred_only_while_parcels_flow_and_the_window_is_free() {
        let park = IdlePolicy::park();
        let soon = Duration::from_millis(1);
        let gap = Duration::from_millis(2);
        assert!(park.defer_link_reads(soon, gap, 4096, 4096));
        assert!(park.defer_link_reads(soon, gap, 2048, 4096));
        assert!(
            !park.defer_link_reads(soon, gap, 2047, 4096),
            "window half used"
        );
        let late = LINK_READ_DEFER_MAX;
        assert!(
            !park.defer_link_reads(late, gap, 4096, 4096),
            "traffic stopped"
        );
        assert!(
            !park.defer_link_reads(soon, late, 4096, 4096),
            "traffic too slow"
        );
        let spin = IdlePolicy::resolve(IdleMode::Spin, SPIN, 8, 3);
        assert!(
            !spin.defer_link_reads(soon, gap, 4096, 4096),
            "spinning reads anyway"
        );
        let busy = IdlePolicy::resolve(IdleMode::BusyPoll, SPIN, 8, 3);
        assert!(!busy.defer_link_reads(soon, gap, 4096, 4096));
    }

    #[test]
    fn a_full_window_waits_for_a_quarter_of_it() {
        assert!(
            window_refilled(false, 1, 4096),
            "room and not waiting: send"
        );
        assert!(!window_refilled(false, 0, 4096));
        assert!(
            !window_refilled(true, 1, 4096),
            "one slot after a full window: wait"
        );
        assert!(!window_refilled(true, 1023, 4096));
        assert!(window_refilled(true, 1024, 4096));
        assert!(window_refilled(true, 1, 2), "a tiny window resumes at once");
    }

    #[test]
    fn names_round_trip() {
        for mode in [
            IdleMode::Adaptive,
            IdleMode::Park,
            IdleMode::Spin,
            IdleMode::BusyPoll,
        ] {
            assert_eq!(IdleMode::from_name(mode.name()), Some(mode));
        }
        assert_eq!(IdleMode::from_name("fast"), None);
    }
}
