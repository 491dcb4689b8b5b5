//! The egress core: where every decision is finalized and leaves for the PLC.
//!
//! Sans-IO: [`EgressCore::pump`] takes decision batches from the hand-off queue, applies
//! the duplicate window and the deadline ([`Finalizer`]) and submits each SORT to the
//! PLC [`HostLink`], or counts it undelivered while the link is down;
//! [`EgressCore::poll_action`] applies what the link reports (chute states into the
//! shared table, confirmations) and tells the driver when to dial or drop the
//! transport. Every parcel's fate and every confirmation goes to an [`EgressObserver`]
//! (the daemon's counters and latency histogram, the simulator's checker, later the
//! sort-event journal). The socket, the clock and the thread are the driver's.

use std::sync::Arc;
use std::time::Instant;

use crate::decision::ChuteNumber;
use crate::pipeline::decide::Decision;
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver};
use crate::plc::{
    ChuteState, ChuteStateTable, HostEvent, HostLink, LinkDownReason, LinkState, SortCommand,
    SortConfirm, WindowFull,
};

/// Where a finalized decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Submitted to the PLC link with this sequence number.
    Sent {
        /// The link's sequence number of the SORT.
        plc_seq: u32,
    },
    /// Marked duplicate: not sent.
    Duplicate,
    /// The link was down, or refused it: not sent, not retried (it is already in the
    /// duplicate window, so a retry would go out as a false duplicate).
    Undelivered,
}

/// Told what the egress core did. Every method but `on_decision` has a do-nothing
/// default.
pub trait EgressObserver {
    /// A decision was finalized at `now` (its final chute and reason) and met `fate`.
    fn on_decision(&mut self, now: Instant, decision: &Decision, fate: Fate);
    /// The PLC reported what happened to a parcel.
    fn on_confirm(&mut self, _confirm: &SortConfirm, _plc_seq: u32) {}
    /// A chute changed state (already applied to the shared table).
    fn on_chute_state(&mut self, _chute: ChuteNumber, _state: ChuteState) {}
    /// The link came up.
    fn on_link_up(&mut self, _peer_session_changed: bool, _resending: u32) {}
    /// The link went down.
    fn on_link_down(&mut self, _why: LinkDownReason) {}
    /// The PLC acknowledged `count` more SORTs.
    fn on_sorts_acked(&mut self, _count: u32) {}
}

/// What the driver must do to the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Dial the PLC (drop any old connection first; ignored when the PLC dials us).
    Connect,
    /// Drop the connection; the link already knows.
    Disconnect,
}

/// The PLC side of the daemon, sans IO.
#[derive(Debug)]
pub struct EgressCore {
    link: HostLink,
    finalizer: Finalizer,
    chute_states: Arc<ChuteStateTable>,
    /// A batch being worked through, and the index of its next decision.
    current: Option<(Batch, usize)>,
}

impl EgressCore {
    /// A core around `link`, writing chute states into `chute_states`.
    pub fn new(
        link: HostLink,
        finalizer: Finalizer,
        chute_states: Arc<ChuteStateTable>,
    ) -> EgressCore {
        EgressCore {
            link,
            finalizer,
            chute_states,
            current: None,
        }
    }

    /// The PLC link.
    pub fn link(&self) -> &HostLink {
        &self.link
    }

    /// The PLC link, for the driver's transport calls.
    pub fn link_mut(&mut self) -> &mut HostLink {
        &mut self.link
    }

    /// Whether the link is established.
    pub fn is_link_up(&self) -> bool {
        self.link.state() == LinkState::Established
    }

    /// Decisions taken from the queue and not yet finalized.
    pub fn pending(&self) -> usize {
        self.current
            .as_ref()
            .map_or(0, |(batch, index)| batch.len().saturating_sub(*index))
    }

    /// Moves decisions from `queue` into the link at `now`; `decided_at_us` stamps the
    /// SORTs (wall-clock microseconds). Stops while the link is up and its window is
    /// full (backpressure). Returns how many decisions it finalized.
    pub fn pump(
        &mut self,
        now: Instant,
        decided_at_us: u64,
        queue: &BatchReceiver,
        observer: &mut impl EgressObserver,
    ) -> usize {
        let mut moved = 0;
        loop {
            let (batch, mut index) = match self.current.take() {
                Some(current) => current,
                None => match queue.try_recv() {
                    Some(batch) => {
                        std::hint::black_box(self.finalizer.warm(&batch));
                        (batch, 0)
                    }
                    None => break,
                },
            };
            let link_up = self.is_link_up();
            while let Some(decision) = batch.get(index).copied() {
                if link_up && self.link.window_free() == 0 {
                    break;
                }
                let decision = self.finalizer.finalize(decision, now);
                let fate = if decision.reason == crate::decision::Reason::Duplicate {
                    Fate::Duplicate
                } else if link_up {
                    match self.submit_sort(&decision, decided_at_us) {
                        Ok(plc_seq) => Fate::Sent { plc_seq },
                        Err(_) => Fate::Undelivered,
                    }
                } else {
                    Fate::Undelivered
                };
                observer.on_decision(now, &decision, fate);
                index += 1;
                moved += 1;
            }
            if index < batch.len() {
                self.current = Some((batch, index));
                break;
            }
            queue.recycle(batch);
        }
        moved
    }

    /// The one place a SORT enters the PLC link. Room was checked by the caller, so the
    /// window takes it; a refusal is counted undelivered by the caller, never retried.
    fn submit_sort(&mut self, decision: &Decision, decided_at_us: u64) -> Result<u32, WindowFull> {
        self.link.submit(SortCommand {
            parcel_id: decision.parcel_id,
            scanner_id: decision.scanner_id,
            chute: decision.chute,
            reason: decision.reason,
            plan_version: decision.plan_version,
            decided_at_us,
        })
    }

    /// Runs the link's timers when one is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.link.poll_timeout().is_some_and(|at| at <= now) {
            self.link.handle_timeout(now);
        }
    }

    /// Applies the link's events (chute states, confirmations) and returns the next
    /// thing the driver must do to the transport, if any. Call until `None`.
    pub fn poll_action(&mut self, observer: &mut impl EgressObserver) -> Option<LinkAction> {
        while let Some(event) = self.link.poll_event() {
            match event {
                HostEvent::ConnectNow => return Some(LinkAction::Connect),
                HostEvent::LinkUp {
                    peer_session_changed,
                    resending,
                } => observer.on_link_up(peer_session_changed, resending),
                HostEvent::LinkDown { why } => {
                    observer.on_link_down(why);
                    return Some(LinkAction::Disconnect);
                }
                HostEvent::ChuteStatusChanged { chute, state } => {
                    self.chute_states.set(chute, state);
                    observer.on_chute_state(chute, state);
                }
                HostEvent::SortConfirmed { confirm, plc_seq } => {
                    observer.on_confirm(&confirm, plc_seq);
                }
                HostEvent::SortsAcked { count, .. } => observer.on_sorts_acked(count),
            }
        }
        None
    }
}
