//! One thread for the whole pipeline: the ingress worker and the PLC side driven by one
//! mio poll (`pipeline.threads = "single"`, and `"auto"` with one ingress worker).
//!
//! With one worker and a separate PLC thread, every parcel crosses threads twice (the
//! scanner's bytes wake the worker, its hand-off wakes the PLC thread through an
//! eventfd), and on a box with few cores each wake-up can wait a scheduler slice behind
//! whatever else runs. Here the worker's hand-off and the PLC side's turn follow each
//! other on one thread: the batch goes through the same bounded queue, but nobody
//! sleeps on it, so no eventfd is written and no second thread is woken.
//!
//! This file only interleaves the two shells' turns ([`IngressWorker`] and [`Egress`],
//! each unchanged in what it does) and splits the poll's events between them by token;
//! it decides nothing itself.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::egress::{Egress, Work};
use super::ingress::IngressWorker;

/// How the pipeline's loops are laid out on threads (`pipeline.threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadMode {
    /// One thread for ingress and the PLC side when there is one ingress worker,
    /// separate threads otherwise.
    Auto,
    /// A thread per ingress worker and one for the PLC side.
    Split,
    /// Ingress and the PLC side on one thread (needs exactly one ingress worker).
    Single,
}

impl ThreadMode {
    /// The mode named in the configuration, if the name is one.
    pub fn from_name(name: &str) -> Option<ThreadMode> {
        match name {
            "auto" => Some(ThreadMode::Auto),
            "split" => Some(ThreadMode::Split),
            "single" => Some(ThreadMode::Single),
            _ => None,
        }
    }

    /// The configuration name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            ThreadMode::Auto => "auto",
            ThreadMode::Split => "split",
            ThreadMode::Single => "single",
        }
    }

    /// Whether ingress and the PLC side share one thread with `workers` ingress workers.
    pub fn is_single(self, workers: usize) -> bool {
        match self {
            ThreadMode::Auto | ThreadMode::Single => workers == 1,
            ThreadMode::Split => false,
        }
    }
}

/// How long the poll sleeps at most while a stopping worker waits for room in the
/// hand-off.
const DRAIN_RETRY: Duration = Duration::from_micros(200);

/// Runs `ingress` and `egress` on this thread over `poll` (both registered their sockets
/// with it) until `stop` is set and both have drained: first the worker hands off what
/// it holds, then the PLC side sends it, as on separate threads.
pub fn run(
    ingress: IngressWorker,
    mut egress: Egress,
    mut poll: Poll,
    stop: &Arc<AtomicBool>,
) -> io::Result<()> {
    let mut ingress = Some(ingress);
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if egress.work(now) == Work::Finished {
            return Ok(());
        }
        let mut timeout = egress.wait_timeout(now);
        if let Some(worker) = &ingress {
            let limit = if stop.load(Ordering::Acquire) {
                DRAIN_RETRY
            } else {
                worker.poll_timeout()
            };
            timeout = Some(timeout.map_or(limit, |timeout| timeout.min(limit)));
        }
        let polled = poll.poll(&mut events, timeout);
        egress.woke();
        if let Err(error) = polled {
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            match &mut ingress {
                Some(worker) if IngressWorker::owns(event.token()) => {
                    worker.handle_event(event, now);
                }
                _ => egress.handle_event(event, now),
            }
        }
        egress.after_events(now);
        if let Some(worker) = &mut ingress {
            if !stop.load(Ordering::Acquire) {
                worker.turn(now);
            } else if worker.stop_step(now) {
                // Dropping the worker drops its end of the queue: the PLC side sees
                // the producers gone and finishes once it has sent what is queued.
                ingress = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_single_with_one_worker_only() {
        assert!(ThreadMode::Auto.is_single(1));
        assert!(!ThreadMode::Auto.is_single(2));
        assert!(!ThreadMode::Split.is_single(1));
        assert!(ThreadMode::Single.is_single(1));
        for mode in [ThreadMode::Auto, ThreadMode::Split, ThreadMode::Single] {
            assert_eq!(ThreadMode::from_name(mode.name()), Some(mode));
        }
        assert_eq!(ThreadMode::from_name("many"), None);
    }
}
