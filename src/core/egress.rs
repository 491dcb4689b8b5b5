//! The egress core: where every decision is finalized and leaves for the PLC.
//!
//! Sans-IO: [`EgressCore::pump`] takes decision batches from the hand-off queue, applies
//! the duplicate window and the deadline ([`Finalizer`]) and submits each SORT to the
//! PLC [`HostLink`]. While the link is down (or resynchronising) the link holds a SORT
//! unnumbered until the PLC's HELLO or the parcel's deadline, whichever comes first, and
//! this core keeps the decision until then; once held and unacknowledged SORTs fill the
//! window, further decisions are undelivered at once.
//! [`EgressCore::poll_action`] applies what the link reports (chute states into the
//! shared table, confirmations, held SORTs released or expired) and tells the driver
//! when to dial or drop the transport. Every parcel's fate (exactly one per finalized
//! decision, a held one's when the link settles it), with its scan's facts when the
//! batches carry them, and every confirmation goes to an [`EgressObserver`] (the
//! daemon's counters, latency histogram and sort-event journal, the simulator's checker).
//! The socket, the clock and the thread are the driver's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::decision::{ChuteNumber, Reason, Rule};
use crate::pipeline::decide::Decision;
use crate::pipeline::facts::{FactsArena, ScanFacts};
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver};
use crate::plc::{
    ChuteState, ChuteStateTable, HostEvent, HostLink, LinkDownReason, LinkState, SortCommand,
    SortConfirm, WindowFull,
};

/// Where a finalized decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Submitted to the PLC link with this sequence number (for a decision held while
    /// the link was down: numbered when the link came back).
    Sent {
        /// The link's sequence number of the SORT.
        plc_seq: u32,
    },
    /// Marked duplicate: not sent.
    Duplicate,
    /// Not sent, not retried (it is already in the duplicate window, so a retry would go
    /// out as a false duplicate): the link's window was full, or the link held it while
    /// down and its deadline passed first (then the decision is reported with reason
    /// `late` and the plan's late chute).
    Undelivered,
}

/// Told what the egress core did. Every method but `on_decision` has a do-nothing
/// default.
pub trait EgressObserver {
    /// A decision met `fate` at `now`, with its final chute and reason: exactly once per
    /// decision taken from the queue. Usually at finalization; for a decision the link
    /// held while down, when the link released it (`Sent`) or its deadline passed
    /// (`Undelivered`, reason `late`). `facts` are its scan's, when the batches carry
    /// them (sort events on).
    fn on_decision(
        &mut self,
        now: Instant,
        decision: &Decision,
        facts: Option<&ScanFacts<'_>>,
        fate: Fate,
    );
    /// The PLC reported what happened to a parcel; its confirmation was read at `now`.
    fn on_confirm(&mut self, _now: Instant, _confirm: &SortConfirm, _plc_seq: u32) {}
    /// A chute changed state (already applied to the shared table).
    fn on_chute_state(&mut self, _chute: ChuteNumber, _state: ChuteState) {}
    /// The link came up.
    fn on_link_up(&mut self, _peer_session_changed: bool, _resending: u32) {}
    /// The link went down.
    fn on_link_down(&mut self, _why: LinkDownReason) {}
    /// The PLC acknowledged `count` more SORTs.
    fn on_sorts_acked(&mut self, _count: u32) {}
    /// A batch was taken from the queue at `now`, before any of its decisions is
    /// finalized (the stage latencies: its producer's stamp against `now`).
    fn on_batch_taken(&mut self, _now: Instant, _batch: &Batch) {}
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
    /// Finalized decisions whose SORT the link holds unnumbered (the link is down), in
    /// submission order; their fate is reported when the link releases or expires them.
    /// At most the link's window. Each keeps a copy of its scan's facts (one-parcel
    /// arenas, reused through `spare_facts`) when its batch carried them.
    held: VecDeque<(Decision, Option<FactsArena>)>,
    spare_facts: Vec<FactsArena>,
}

impl EgressCore {
    /// A core around `link`, writing chute states into `chute_states`.
    pub fn new(
        link: HostLink,
        finalizer: Finalizer,
        chute_states: Arc<ChuteStateTable>,
    ) -> EgressCore {
        EgressCore {
            held: VecDeque::with_capacity(link.window_free()),
            spare_facts: Vec::new(),
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

    /// Decisions finalized whose SORT the link holds while it is down: their fate is
    /// not reported yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The driver stops for good: every held SORT expires now. Their fates (undelivered,
    /// `late`) reach the observer through the next [`EgressCore::poll_action`].
    pub fn abandon_held(&mut self) {
        self.link.abandon_held();
    }

    /// Moves decisions from `queue` into the link at `now`; `decided_at_us` stamps the
    /// SORTs (wall-clock microseconds). Stops while the link is up and its window is
    /// full (backpressure). Returns how many decisions it finalized (held ones
    /// included: their fate is reported later, by [`EgressCore::poll_action`]).
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
                        observer.on_batch_taken(now, &batch);
                        self.finalizer.warm(batch.decisions());
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
                let facts = batch.facts(index);
                let fate = if decision.reason == Reason::Duplicate {
                    Some(Fate::Duplicate)
                } else {
                    match self.submit_sort(&decision, decided_at_us) {
                        Ok(Some(plc_seq)) => Some(Fate::Sent { plc_seq }),
                        Ok(None) => {
                            self.hold(decision, facts.as_ref());
                            None
                        }
                        Err(_) => Some(Fate::Undelivered),
                    }
                };
                if let Some(fate) = fate {
                    observer.on_decision(now, &decision, facts.as_ref(), fate);
                }
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

    /// The one place a SORT enters the PLC link, worth sending until the parcel's
    /// deadline. While the link is up, room was checked by the caller, so the window
    /// takes it (`Some(seq)`); while it is down the link holds it (`None`) or, with no
    /// room left, refuses it: undelivered, never retried.
    fn submit_sort(
        &mut self,
        decision: &Decision,
        decided_at_us: u64,
    ) -> Result<Option<u32>, WindowFull> {
        let deadline = decision.received_at + self.finalizer.deadline();
        self.link.submit(
            SortCommand {
                parcel_id: decision.parcel_id,
                scanner_id: decision.scanner_id,
                chute: decision.chute,
                reason: decision.reason,
                plan_version: decision.plan_version,
                decided_at_us,
            },
            deadline,
        )
    }

    /// Keeps a decision whose SORT the link holds, with a copy of its facts.
    fn hold(&mut self, decision: Decision, facts: Option<&ScanFacts<'_>>) {
        let kept = facts.map(|facts| {
            let mut arena = self.spare_facts.pop().unwrap_or_else(|| FactsArena::new(1));
            arena.push(facts);
            arena
        });
        self.held.push_back((decision, kept));
    }

    /// Takes the held decision whose SORT the link released or expired. The link keeps
    /// held SORTs in submission order and the finalizer lets a parcel through only once,
    /// so the first match is the one.
    fn take_held(&mut self, sort: &SortCommand) -> Option<(Decision, Option<FactsArena>)> {
        let index = self.held.iter().position(|(decision, _)| {
            decision.parcel_id == sort.parcel_id
                && decision.scanner_id == sort.scanner_id
                && decision.chute == sort.chute
                && decision.reason == sort.reason
        })?;
        self.held.remove(index)
    }

    /// Reports a held decision's fate, then keeps its facts' arena for reuse.
    fn settle_held(
        &mut self,
        now: Instant,
        (decision, facts): (Decision, Option<FactsArena>),
        fate: Fate,
        observer: &mut impl EgressObserver,
    ) {
        let copy = facts.as_ref().and_then(|arena| arena.get(0));
        observer.on_decision(now, &decision, copy.as_ref(), fate);
        if let Some(mut arena) = facts {
            arena.clear();
            if self.spare_facts.len() < self.held.capacity() {
                self.spare_facts.push(arena);
            }
        }
    }

    /// Runs the link's timers when one is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.link.poll_timeout().is_some_and(|at| at <= now) {
            self.link.handle_timeout(now);
        }
    }

    /// Applies the link's events at `now` (chute states, confirmations, held SORTs
    /// released or expired) and returns the next thing the driver must do to the
    /// transport, if any. Call until `None`.
    pub fn poll_action(
        &mut self,
        now: Instant,
        observer: &mut impl EgressObserver,
    ) -> Option<LinkAction> {
        while let Some(event) = self.link.poll_event() {
            match event {
                HostEvent::ConnectNow => return Some(LinkAction::Connect),
                HostEvent::LinkUp {
                    peer_session_changed,
                    resending,
                } => {
                    if peer_session_changed {
                        // A PLC new to this session (first contact, or it restarted)
                        // announces every chute not available right after its HELLO;
                        // what we knew before may be stale.
                        self.chute_states.set_all_available();
                    }
                    observer.on_link_up(peer_session_changed, resending);
                }
                HostEvent::HeldReleased { sort, seq } => {
                    if let Some(held) = self.take_held(&sort) {
                        self.settle_held(now, held, Fate::Sent { plc_seq: seq }, observer);
                    }
                }
                HostEvent::HeldExpired { sort } => {
                    if let Some((decision, facts)) = self.take_held(&sort) {
                        let late = Decision {
                            chute: decision.late_chute,
                            reason: Reason::Late,
                            rule: Rule::Default,
                            ..decision
                        };
                        self.settle_held(now, (late, facts), Fate::Undelivered, observer);
                    }
                }
                HostEvent::LinkDown { why } => {
                    observer.on_link_down(why);
                    return Some(LinkAction::Disconnect);
                }
                HostEvent::ChuteStatusChanged { chute, state } => {
                    self.chute_states.set(chute, state);
                    observer.on_chute_state(chute, state);
                }
                HostEvent::SortConfirmed { confirm, plc_seq } => {
                    observer.on_confirm(now, &confirm, plc_seq);
                }
                HostEvent::SortsAcked { count, .. } => observer.on_sorts_acked(count),
            }
        }
        None
    }
}

/// Test doubles shared by the core's tests and its drivers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::pipeline::queue::Wake;

    /// A queue wake-up that nobody listens to.
    pub(crate) struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    /// A primary-chute decision (chute 7, plan version 1, late chute 996).
    pub(crate) fn decision(parcel_id: u64, received_at: Instant) -> Decision {
        Decision {
            parcel_id,
            scanner_id: 1,
            chute: 7,
            reason: Reason::SortedPrimary,
            rule: Rule::Exact,
            plan_version: 1,
            preadvice_seq: 0,
            late_chute: 996,
            received_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{NoWake, decision};
    use super::*;
    use crate::pipeline::queue::batch_queue;
    use crate::plc::{LinkConfig, PeerConfig, PlcPeer};
    use std::time::Duration;

    /// Records every fate, and fails the test on a second fate for one parcel.
    #[derive(Default)]
    struct Fates {
        seen: Vec<(u64, Reason, ChuteNumber, Fate)>,
    }

    impl EgressObserver for Fates {
        fn on_decision(
            &mut self,
            _now: Instant,
            decision: &Decision,
            _facts: Option<&ScanFacts<'_>>,
            fate: Fate,
        ) {
            assert!(
                self.seen.iter().all(|seen| seen.0 != decision.parcel_id),
                "parcel {} got a second fate",
                decision.parcel_id
            );
            self.seen
                .push((decision.parcel_id, decision.reason, decision.chute, fate));
        }
    }

    /// Connects the host to a fresh PLC and lets the HELLOs (and whatever the PLC
    /// queues after its HELLO) cross once each way.
    fn handshake(core: &mut EgressCore, plc: &mut PlcPeer, now: Instant) {
        core.link_mut().handle_connected(now);
        plc.handle_connected(now);
        exchange(core, plc, now);
    }

    /// Moves the link's bytes both ways once.
    fn exchange(core: &mut EgressCore, plc: &mut PlcPeer, now: Instant) {
        let mut to_plc = Vec::new();
        core.link_mut().poll_transmit(now, &mut to_plc);
        plc.handle_input(now, &to_plc);
        let mut to_host = Vec::new();
        plc.poll_transmit(now, &mut to_host);
        core.link_mut().handle_input(now, &to_host);
    }

    #[test]
    fn a_full_window_while_the_link_is_up_stops_the_pump_until_acks_free_it() {
        let start = Instant::now();
        let (sender, receiver) = batch_queue(4, 8, false, Arc::new(NoWake));
        let config = LinkConfig {
            window_max: 4,
            ..LinkConfig::default()
        };
        let link = HostLink::new(config, start);
        let finalizer = Finalizer::new(Duration::from_secs(5), Duration::from_secs(60), 64);
        let mut core = EgressCore::new(link, finalizer, Arc::new(ChuteStateTable::new()));
        let mut plc = PlcPeer::new(config, start);
        let mut fates = Fates::default();
        handshake(&mut core, &mut plc, start);
        while core.poll_action(start, &mut fates).is_some() {}
        assert!(core.is_link_up());
        let mut batch = sender.empty_batch();
        for parcel_id in 1..=6 {
            batch.push(decision(parcel_id, start), &ScanFacts::default());
        }
        sender.try_send(batch).ok();
        assert_eq!(core.pump(start, 0, &receiver, &mut fates), 4);
        assert_eq!(core.pending(), 2, "the rest waits in the batch");
        assert_eq!(core.pump(start, 0, &receiver, &mut fates), 0, "still full");
        exchange(&mut core, &mut plc, start);
        while core.poll_action(start, &mut fates).is_some() {}
        assert_eq!(core.pump(start, 0, &receiver, &mut fates), 2);
        assert_eq!(core.pending(), 0);
        let sent: Vec<_> = fates.seen.iter().map(|seen| (seen.0, seen.3)).collect();
        let expected: Vec<_> = (1..=6u32)
            .map(|seq| (u64::from(seq), Fate::Sent { plc_seq: seq }))
            .collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn held_sorts_expire_by_deadline_and_each_reports_its_own_parcel() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let (sender, receiver) = batch_queue(4, 8, false, Arc::new(NoWake));
        let link = HostLink::new(LinkConfig::default(), start);
        let finalizer = Finalizer::new(ms(500), ms(0), 64);
        let mut core = EgressCore::new(link, finalizer, Arc::new(ChuteStateTable::new()));
        let mut fates = Fates::default();
        // Link down. Parcel 1 was received 300 ms after parcel 2 but is held first.
        let at = start + ms(300);
        let mut batch = sender.empty_batch();
        batch.push(decision(1, at), &ScanFacts::default());
        batch.push(decision(2, start), &ScanFacts::default());
        batch.push(decision(3, at), &ScanFacts::default());
        sender.try_send(batch).ok();
        assert_eq!(core.pump(at, 0, &receiver, &mut fates), 3);
        assert_eq!((core.held(), fates.seen.len()), (3, 0));
        // +600 ms: only parcel 2 (deadline +500) is past its deadline.
        let expiry = start + ms(600);
        core.handle_timeout(expiry);
        while core.poll_action(expiry, &mut fates).is_some() {}
        assert_eq!(fates.seen, vec![(2, Reason::Late, 996, Fate::Undelivered)]);
        assert_eq!(core.held(), 2);
        // The driver stops: the rest expire at once, each with its own parcel.
        core.abandon_held();
        while core.poll_action(expiry, &mut fates).is_some() {}
        let rest: Vec<_> = fates.seen[1..].iter().map(|seen| seen.0).collect();
        assert_eq!(rest, vec![1, 3]);
        assert_eq!(core.held(), 0);
    }

    #[test]
    fn decisions_held_while_the_link_is_down_get_one_fate_each_when_it_settles() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let (sender, receiver) = batch_queue(4, 8, false, Arc::new(NoWake));
        let link = HostLink::new(
            LinkConfig {
                window_max: 4,
                ..LinkConfig::default()
            },
            start,
        );
        let chutes = Arc::new(ChuteStateTable::new());
        let finalizer = Finalizer::new(ms(500), ms(0), 64);
        let mut core = EgressCore::new(link, finalizer, Arc::clone(&chutes));
        let mut fates = Fates::default();
        // Link down: parcels 1 and 2 at start (deadline +500 ms), 3 and 4 at +300 ms
        // (deadline +800 ms), 5 finds the window (4) full of held SORTs.
        let mut batch = sender.empty_batch();
        batch.push(decision(1, start), &ScanFacts::default());
        batch.push(decision(2, start), &ScanFacts::default());
        sender.try_send(batch).ok();
        assert_eq!(core.pump(start, 0, &receiver, &mut fates), 2);
        let later = start + ms(300);
        let mut batch = sender.empty_batch();
        for parcel_id in 3..=5 {
            batch.push(decision(parcel_id, later), &ScanFacts::default());
        }
        sender.try_send(batch).ok();
        assert_eq!(core.pump(later, 0, &receiver, &mut fates), 3);
        assert_eq!(core.held(), 4);
        assert_eq!(
            fates.seen,
            vec![(5, Reason::SortedPrimary, 7, Fate::Undelivered)]
        );
        // +600 ms: 1 and 2 passed their chute unsent: undelivered, late, late chute.
        let expiry = start + ms(600);
        core.handle_timeout(expiry);
        while core.poll_action(expiry, &mut fates).is_some() {}
        assert_eq!(core.held(), 2);
        assert_eq!(
            fates.seen[1..],
            [
                (1, Reason::Late, 996, Fate::Undelivered),
                (2, Reason::Late, 996, Fate::Undelivered)
            ]
        );
        // The PLC says HELLO: 3 and 4 are numbered and sent, in order.
        let mut plc = PlcPeer::new(PeerConfig::default(), start);
        let up = start + ms(700);
        handshake(&mut core, &mut plc, up);
        while core.poll_action(up, &mut fates).is_some() {}
        assert_eq!(core.held(), 0);
        let sent: Vec<_> = fates.seen[3..]
            .iter()
            .map(|seen| (seen.0, seen.3))
            .collect();
        assert_eq!(
            sent,
            vec![
                (3, Fate::Sent { plc_seq: 1 }),
                (4, Fate::Sent { plc_seq: 2 })
            ]
        );
        assert_eq!(fates.seen.len(), 5, "one fate per parcel");
    }

    #[test]
    fn a_plc_new_to_the_session_resets_chute_states_then_announces_its_own() {
        let start = Instant::now();
        let (_sender, receiver) = batch_queue(1, 1, false, Arc::new(NoWake));
        let chutes = Arc::new(ChuteStateTable::new());
        // What an earlier PLC said: chutes 5 and 6 full.
        chutes.set(5, ChuteState::Full);
        chutes.set(6, ChuteState::Full);
        let link = HostLink::new(LinkConfig::default(), start);
        let finalizer = Finalizer::new(Duration::from_secs(1), Duration::ZERO, 8);
        let mut core = EgressCore::new(link, finalizer, Arc::clone(&chutes));
        // The PLC now knows chute 6 disabled, nothing else.
        let mut plc = PlcPeer::new(PeerConfig::default(), start);
        plc.set_chute_state(6, ChuteState::Disabled).ok();
        let mut fates = Fates::default();
        handshake(&mut core, &mut plc, start);
        while core.poll_action(start, &mut fates).is_some() {}
        assert_eq!(core.pump(start, 0, &receiver, &mut fates), 0);
        assert_eq!(
            chutes.get(5),
            ChuteState::Available,
            "stale state forgotten"
        );
        assert_eq!(chutes.get(6), ChuteState::Disabled, "announced after HELLO");
        assert_eq!(chutes.unavailable_count(), 1);
    }

    /// Records every fate with the facts that came with it.
    #[derive(Default)]
    struct FactsSeen {
        seen: Vec<(u64, Fate, Rule, String)>,
    }

    impl EgressObserver for FactsSeen {
        fn on_decision(
            &mut self,
            _now: Instant,
            decision: &Decision,
            facts: Option<&ScanFacts<'_>>,
            fate: Fate,
        ) {
            self.seen.push((
                decision.parcel_id,
                fate,
                decision.rule,
                format!("{facts:?}"),
            ));
        }
    }

    struct DecisionsOnly;
    impl crate::core::session::SessionObserver for DecisionsOnly {}

    /// The sink the daemon's ingress uses, reduced to the hand-off.
    struct QueueSink {
        batch: Batch,
        sender: crate::pipeline::queue::BatchSender,
    }

    impl crate::core::session::DecisionSink for QueueSink {
        fn room(&self) -> usize {
            self.batch.room()
        }
        fn flush(&mut self) -> bool {
            let full = std::mem::take(&mut self.batch);
            self.sender.try_send(full).is_ok() && {
                self.batch = self.sender.empty_batch();
                true
            }
        }
        fn push(&mut self, decision: Decision, scan: &crate::wire::ScanFrame<'_>, plan: &str) {
            self.batch.push_scan(decision, scan, plan);
        }
    }

    /// Scans `bytes` in one scanner session into a queue carrying facts (or not).
    fn scan_into_queue(
        framing: crate::wire::Framing,
        bytes: &[u8],
        carry_facts: bool,
        now: Instant,
    ) -> BatchReceiver {
        use crate::core::session::{Decider, ScannerSession, SessionLimits};
        let csv = "kind,key,chutes\nmeta,name,wave-3\nprefix,3301,12|13\n\
                   exact,JD0000000000002,7\ndefault,no_read,998\ndefault,no_rule,999\n\
                   default,multi_read,997\ndefault,late,996\n";
        let compiled = crate::plan::compile_str("wave-3.csv", csv).expect("compiles");
        let plan =
            crate::plan::PlanHandle::new(crate::plan::Plan::from_bytes(compiled).expect("opens"));
        let (sender, receiver) = batch_queue(4, 8, carry_facts, Arc::new(NoWake));
        let mut sink = QueueSink {
            batch: sender.empty_batch(),
            sender,
        };
        let limits = SessionLimits {
            buffer_bytes: 4096,
            frame_deadline: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
        };
        let mut session = ScannerSession::new(framing, 101, limits, now);
        assert_eq!(session.handle_input(now, bytes), bytes.len());
        let view = plan.view();
        let chutes = ChuteStateTable::new();
        let mut synthetic = 0;
        let mut decider = Decider {
            plan: &view,
            chute_states: &chutes,
            synthetic_parcel_id: &mut synthetic,
        };
        assert!(session.poll_decisions(now, &mut decider, &mut sink, &mut DecisionsOnly));
        assert!(crate::core::session::DecisionSink::flush(&mut sink));
        receiver
    }

    #[test]
    fn a_scans_facts_reach_the_egress_observer_sent_at_once_or_held_while_the_link_is_down() {
        use crate::wire::{Barcodes, Frame, Framing, ScanFlags, ScanFrame, TextProfile};
        let start = Instant::now();
        let codes: [&[u8]; 2] = [b"YT0000000000001", b"JD0000000000002"];
        let mut binary = Vec::new();
        crate::wire::encode(
            &Frame::Scan(ScanFrame {
                scanner_id: 7,
                sequence: 1,
                parcel_id: 41,
                scanned_at_us: 0,
                barcodes: Barcodes::from_slice(&codes).expect("two"),
                destination: Some(b"330106"),
                weight_g: 1234,
                length_mm: 300,
                width_mm: 200,
                height_mm: 100,
                flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
            }),
            &mut binary,
        )
        .expect("encodes");
        let dws = b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03";
        let profile = Framing::Text(TextProfile::builtin("sick-dws").expect("built in"));

        // Events off: the batches carry no facts.
        let plain = scan_into_queue(Framing::Binary, &binary, false, start);
        let link = HostLink::new(LinkConfig::default(), start);
        let finalizer = Finalizer::new(Duration::from_secs(1), Duration::ZERO, 8);
        let mut core = EgressCore::new(link, finalizer, Arc::new(ChuteStateTable::new()));
        let mut seen = FactsSeen::default();
        assert_eq!(core.pump(start, 0, &plain, &mut seen), 1);
        assert_eq!(seen.seen, vec![]);
        assert_eq!(core.held(), 1);

        // Events on: the binary scan is held (link down), the telegram goes out at once.
        let mut core = {
            let link = HostLink::new(LinkConfig::default(), start);
            let finalizer = Finalizer::new(Duration::from_secs(1), Duration::ZERO, 8);
            EgressCore::new(link, finalizer, Arc::new(ChuteStateTable::new()))
        };
        let held = scan_into_queue(Framing::Binary, &binary, true, start);
        assert_eq!(core.pump(start, 0, &held, &mut seen), 1);
        assert_eq!(core.held(), 1);
        let mut plc = PlcPeer::new(PeerConfig::default(), start);
        handshake(&mut core, &mut plc, start);
        while core.poll_action(start, &mut seen).is_some() {}
        let direct = scan_into_queue(profile, dws, true, start);
        assert_eq!(core.pump(start, 0, &direct, &mut seen), 1);
        let binary_facts = ScanFacts {
            barcodes: Barcodes::from_slice(&codes).expect("two"),
            destination: b"330106",
            plan_name: "wave-3",
            flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
            weight_g: 1234,
            length_mm: 300,
            width_mm: 200,
            height_mm: 100,
        };
        let dws_code: [&[u8]; 1] = [b"1JVGL0012345"];
        let dws_facts = ScanFacts {
            barcodes: Barcodes::from_slice(&dws_code).expect("one"),
            destination: b"",
            plan_name: "wave-3",
            flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
            weight_g: 81212,
            length_mm: 321,
            width_mm: 150,
            height_mm: 87,
        };
        assert_eq!(
            seen.seen,
            vec![
                (
                    41,
                    Fate::Sent { plc_seq: 1 },
                    Rule::Exact,
                    format!("{:?}", Some(&binary_facts))
                ),
                (
                    145,
                    Fate::Sent { plc_seq: 2 },
                    Rule::Default,
                    format!("{:?}", Some(&dws_facts))
                ),
            ]
        );
    }
}
