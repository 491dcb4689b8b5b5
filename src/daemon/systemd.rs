//! systemd integration: `sd_notify` messages (READY, RELOADING, STOPPING, STATUS,
//! WATCHDOG) and the liveness rule that decides when the watchdog may be fed.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (not started by systemd, or
//! started without `Type=notify`), so the daemon behaves the same in a terminal, a test
//! or a container. The watchdog is fed by the main loop only while every daemon thread's
//! event loop keeps turning ([`LivenessWatch`]), so a wedged thread stops the pings and
//! systemd restarts the service. This module sends datagrams; it reads no counters itself
//! and starts no threads.

use std::time::Duration;

use sd_notify::NotifyState;

/// How often liveness is checked (and the watchdog fed) when systemd set no watchdog:
/// stalls are still logged.
pub const LIVENESS_CHECK_DEFAULT: Duration = Duration::from_secs(1);
/// The shortest liveness check interval: every daemon thread turns at least every 50 ms,
/// so a shorter check would call a healthy thread stalled.
pub const LIVENESS_CHECK_MIN: Duration = Duration::from_millis(200);
/// The longest liveness check interval.
pub const LIVENESS_CHECK_MAX: Duration = Duration::from_secs(5);
/// How often the STATUS line is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a daemon thread's loop may wait between turns (ingress sweep interval and
/// PLC park limit); the liveness check must be slower than this.
pub const THREAD_TURN_INTERVAL_MAX: Duration = Duration::from_millis(50);

const _: () = assert!(LIVENESS_CHECK_MIN.as_millis() >= 2 * THREAD_TURN_INTERVAL_MAX.as_millis());
const _: () = assert!(LIVENESS_CHECK_MIN.as_millis() <= LIVENESS_CHECK_DEFAULT.as_millis());
const _: () = assert!(LIVENESS_CHECK_DEFAULT.as_millis() <= LIVENESS_CHECK_MAX.as_millis());

/// Talks to the service manager, if there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    active: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`) once.
    pub fn from_environment() -> Notifier {
        Notifier {
            active: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// A notifier that never sends anything.
    pub fn inactive() -> Notifier {
        Notifier {
            active: false,
            watchdog: None,
        }
    }

    /// Whether messages go anywhere.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The watchdog period systemd asked for (`WatchdogSec=`), if any.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to check liveness and feed the watchdog: a quarter of its period, so
    /// one missed check (a slow scheduler) does not get the service killed.
    pub fn liveness_check_interval(&self) -> Duration {
        liveness_check_interval(self.watchdog)
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.active {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::debug!(%error, "sd_notify failed");
        }
    }

    /// Start-up (or a reload) is complete: listeners bound, threads running.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// A reload starts now (`RELOADING=1` with the `CLOCK_MONOTONIC` time systemd wants).
    pub fn reloading(&self) {
        if !self.active {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The drain starts now.
    pub fn stopping(&self, status: &str) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ]);
    }

    /// Replaces the one-line status `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// Feeds the watchdog. Call only when [`LivenessWatch::observe`] said every thread
    /// moved.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}

/// A STATUS value must be one line.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// See [`Notifier::liveness_check_interval`].
pub fn liveness_check_interval(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(LIVENESS_CHECK_DEFAULT, |period| {
        (period / 4).clamp(LIVENESS_CHECK_MIN, LIVENESS_CHECK_MAX)
    })
}

/// What a liveness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Every thread turned since the previous check: feed the watchdog.
    AllAdvanced,
    /// This thread (index into the turn counts) did not turn: do not feed the watchdog.
    Stalled {
        /// Index of the first thread that did not move.
        thread: usize,
    },
}

/// Compares each thread's loop-turn count with the previous check's.
#[derive(Debug, Clone)]
pub struct LivenessWatch {
    previous: Vec<u64>,
}

impl LivenessWatch {
    /// Starts from the counts as they are now.
    pub fn new(turns: &[u64]) -> LivenessWatch {
        LivenessWatch {
            previous: turns.to_vec(),
        }
    }

    /// Whether every thread turned since the last call; remembers `turns` for the next.
    /// A thread count that changed (it cannot, while the daemon runs) counts as stalled.
    pub fn observe(&mut self, turns: &[u64]) -> Liveness {
        let verdict = if turns.len() != self.previous.len() {
            Liveness::Stalled { thread: 0 }
        } else {
            match turns
                .iter()
                .zip(&self.previous)
                .position(|(now, before)| now == before)
            {
                Some(thread) => Liveness::Stalled { thread },
                None => Liveness::AllAdvanced,
            }
        };
        self.previous.clear();
        self.previous.extend_from_slice(turns);
        verdict
    }
}

/// What the STATUS line shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusFigures<'a> {
    /// Decisions made so far.
    pub decided: u64,
    /// Decisions per second since the previous status.
    pub decided_per_s: f64,
    /// Whether the PLC link is established.
    pub plc_link_up: bool,
    /// SORTs sent and not yet acknowledged.
    pub in_flight: u64,
    /// Scanner connections open.
    pub connections_open: u64,
    /// The current plan's name.
    pub plan_name: &'a str,
    /// The current plan's version.
    pub plan_version: u32,
    /// The sort-event journal's events journaled and lost, when `[events]` is on.
    pub journal: Option<(u64, u64)>,
}

/// The one-line STATUS text, for example
/// `decided 1200345 (98000/s), PLC up, 12 in flight, 8 scanners, plan "wave 2" v7`,
/// then `, journal 1200400 events, 0 lost` when the journal is on.
pub fn status_text(figures: &StatusFigures<'_>) -> String {
    let mut text = format!(
        "decided {} ({:.0}/s), PLC {}, {} in flight, {} scanners, plan \"{}\" v{}",
        figures.decided,
        figures.decided_per_s.max(0.0),
        if figures.plc_link_up { "up" } else { "down" },
        figures.in_flight,
        figures.connections_open,
        figures.plan_name,
        figures.plan_version,
    );
    if let Some((journaled, lost)) = figures.journal {
        text.push_str(&format!(", journal {journaled} events, {lost} lost"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_every_thread_moves() {
        let mut watch = LivenessWatch::new(&[10, 20, 30]);
        let steps: &[(&[u64], Liveness)] = &[
            (&[11, 21, 31], Liveness::AllAdvanced),
            (&[12, 21, 35], Liveness::Stalled { thread: 1 }),
            (&[13, 22, 36], Liveness::AllAdvanced),
            (&[13, 22, 36], Liveness::Stalled { thread: 0 }),
            (&[14, 23, 36], Liveness::Stalled { thread: 2 }),
            (&[15, 24, 37], Liveness::AllAdvanced),
            (&[16, 25], Liveness::Stalled { thread: 0 }),
        ];
        for (turns, expected) in steps {
            assert_eq!(watch.observe(turns), *expected, "{turns:?}");
        }
    }

    #[test]
    fn the_check_interval_is_a_quarter_of_the_watchdog_within_bounds() {
        let cases = [
            (None, LIVENESS_CHECK_DEFAULT),
            (Some(Duration::from_secs(10)), Duration::from_millis(2_500)),
            (Some(Duration::from_millis(400)), LIVENESS_CHECK_MIN),
            (Some(Duration::from_secs(120)), LIVENESS_CHECK_MAX),
        ];
        for (watchdog, expected) in cases {
            assert_eq!(liveness_check_interval(watchdog), expected, "{watchdog:?}");
        }
    }

    #[test]
    fn status_is_one_line_with_the_live_figures() {
        let text = status_text(&StatusFigures {
            decided: 1_200_345,
            decided_per_s: 98_000.4,
            plc_link_up: true,
            in_flight: 12,
            connections_open: 8,
            plan_name: "wave 2",
            plan_version: 7,
            journal: None,
        });
        assert_eq!(
            text,
            "decided 1200345 (98000/s), PLC up, 12 in flight, 8 scanners, plan \"wave 2\" v7"
        );
        let with_journal = status_text(&StatusFigures {
            decided: 5,
            decided_per_s: 0.0,
            plc_link_up: false,
            in_flight: 0,
            connections_open: 1,
            plan_name: "p",
            plan_version: 1,
            journal: Some((9, 2)),
        });
        assert!(
            with_journal.ends_with(", journal 9 events, 2 lost"),
            "{with_journal}"
        );
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}
