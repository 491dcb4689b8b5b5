//! The hand-off from ingress workers to the PLC thread: a bounded queue of decision
//! batches, with a parking flag so an idle consumer sleeps instead of spinning and a
//! producer wakes it only when it is asleep.
//!
//! Batches are recycled through a second bounded queue so the steady state allocates
//! nothing. With sort events on, each batch also carries its parcels' scan facts
//! ([`FactsArena`]), recycled with it. This module does not decide what to do when the
//! queue is full: the producer keeps its batch and stops reading (backpressure).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

use super::decide::Decision;
use super::facts::{FactsArena, ScanFacts};
use crate::wire::ScanFrame;

/// A batch of decisions, and (with sort events on) their scans' facts in the same order.
/// The default is an empty placeholder that holds nothing and allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    decisions: Vec<Decision>,
    facts: Option<FactsArena>,
    parcels_max: usize,
    /// When the producer handed it over (one clock read per batch), for the stage
    /// latencies.
    handed_at: Option<Instant>,
}

impl Batch {
    /// An empty batch of at most `parcels_max` decisions; `carry_facts` gives it an
    /// arena for its scans' facts.
    pub fn new(parcels_max: usize, carry_facts: bool) -> Batch {
        Batch {
            decisions: Vec::with_capacity(parcels_max),
            facts: carry_facts.then(|| FactsArena::new(parcels_max)),
            parcels_max,
            handed_at: None,
        }
    }

    /// Stamps the moment the producer hands it over.
    #[inline]
    pub fn stamp_handed(&mut self, at: Instant) {
        self.handed_at = Some(at);
    }

    /// When the producer handed it over, if it was stamped.
    pub fn handed_at(&self) -> Option<Instant> {
        self.handed_at
    }

    /// Decisions it can still take before it must be handed over: 0 once it holds
    /// `parcels_max`, or once its facts used the arena bytes planned for them.
    #[inline]
    pub fn room(&self) -> usize {
        if self.facts.as_ref().is_some_and(FactsArena::is_full) {
            return 0;
        }
        self.parcels_max.saturating_sub(self.decisions.len())
    }

    /// Adds a decision; `facts` are copied when the batch carries facts.
    #[inline]
    pub fn push(&mut self, decision: Decision, facts: &ScanFacts<'_>) {
        if let Some(arena) = &mut self.facts {
            arena.push(facts);
        }
        self.decisions.push(decision);
    }

    /// Adds the decision of `scan`, decided by the plan named `plan_name`; the scan's
    /// facts are gathered and copied only when the batch carries facts (the ingress hot
    /// path: nothing but the decision is touched with events off).
    #[inline]
    pub fn push_scan(&mut self, decision: Decision, scan: &ScanFrame<'_>, plan_name: &str) {
        if let Some(arena) = &mut self.facts {
            arena.push(&ScanFacts::of_scan(scan, plan_name));
        }
        self.decisions.push(decision);
    }

    /// The decisions, in push order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// True when it holds no decision.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    /// The `index`-th decision.
    pub fn get(&self, index: usize) -> Option<&Decision> {
        self.decisions.get(index)
    }

    /// The facts of the `index`-th decision's scan; `None` when the batch carries none.
    pub fn facts(&self, index: usize) -> Option<ScanFacts<'_>> {
        self.facts.as_ref()?.get(index)
    }

    /// Whether the batch carries its scans' facts.
    pub fn carries_facts(&self) -> bool {
        self.facts.is_some()
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.decisions.clear();
        self.handed_at = None;
        if let Some(arena) = &mut self.facts {
            arena.clear();
        }
    }
}

/// Wakes the consumer when it parks. Implemented by the consumer's event loop.
pub trait Wake: Send + Sync {
    /// Wake the consumer; may be called spuriously.
    fn wake(&self);
}

impl Wake for mio::Waker {
    fn wake(&self) {
        // A failed wake means the poll instance is gone: the consumer has exited.
        let _ = mio::Waker::wake(self);
    }
}

struct Shared {
    consumer_parked: AtomicBool,
    waker: Arc<dyn Wake>,
}

/// Held by every producer; the consumer sees the producers are gone when no strong
/// reference is left.
struct ProducerToken;

/// The producer's end (one per ingress worker).
#[derive(Clone)]
pub struct BatchSender {
    _alive: Arc<ProducerToken>,
    batches: Sender<Batch>,
    recycled: Receiver<Batch>,
    shared: Arc<Shared>,
    batch_parcels_max: usize,
    carry_facts: bool,
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender")
            .field("queued", &self.batches.len())
            .finish()
    }
}

/// The consumer's end (the PLC thread).
pub struct BatchReceiver {
    producers: Weak<ProducerToken>,
    batches: Receiver<Batch>,
    recycled: Sender<Batch>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReceiver")
            .field("queued", &self.batches.len())
            .finish()
    }
}

/// A queue of at most `queue_batches_max` batches of at most `batch_parcels_max`
/// decisions; with `carry_facts` (sort events on) each batch carries its scans' facts.
pub fn batch_queue(
    queue_batches_max: usize,
    batch_parcels_max: usize,
    carry_facts: bool,
    waker: Arc<dyn Wake>,
) -> (BatchSender, BatchReceiver) {
    let (batch_tx, batch_rx) = channel::bounded(queue_batches_max);
    // Room for every batch in the queue plus a few held by producers and the consumer.
    let (recycle_tx, recycle_rx) = channel::bounded(queue_batches_max + 64);
    let shared = Arc::new(Shared {
        consumer_parked: AtomicBool::new(false),
        waker,
    });
    let producers = Arc::new(ProducerToken);
    (
        BatchSender {
            _alive: producers.clone(),
            batches: batch_tx,
            recycled: recycle_rx,
            shared: shared.clone(),
            batch_parcels_max,
            carry_facts,
        },
        BatchReceiver {
            producers: Arc::downgrade(&producers),
            batches: batch_rx,
            recycled: recycle_tx,
            shared,
        },
    )
}

impl BatchSender {
    /// An empty batch, recycled when one is available.
    pub fn empty_batch(&self) -> Batch {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| Batch::new(self.batch_parcels_max, self.carry_facts))
    }

    /// Hands a batch over. When the queue is full the batch comes back: the caller keeps it
    /// and stops reading until a later attempt succeeds.
    // The refused batch comes back by value to be retried; boxing it would cost an
    // allocation per hand-off.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        match self.batches.try_send(batch) {
            Ok(()) => {
                if self.shared.consumer_parked.load(Ordering::SeqCst)
                    && self.shared.consumer_parked.swap(false, Ordering::SeqCst)
                {
                    self.shared.waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => Err(batch),
        }
    }

    /// Batches waiting for the consumer.
    pub fn queued(&self) -> usize {
        self.batches.len()
    }
}

impl BatchReceiver {
    /// The next batch, if one is waiting.
    pub fn try_recv(&self) -> Option<Batch> {
        self.batches.try_recv().ok()
    }

    /// Returns a drained batch for reuse.
    pub fn recycle(&self, mut batch: Batch) {
        batch.clear();
        let _ = self.recycled.try_send(batch);
    }

    /// Announces that the consumer is about to sleep. Returns false (and stays awake) when
    /// work arrived meanwhile; call [`BatchReceiver::unpark`] after waking.
    pub fn park(&self) -> bool {
        self.shared.consumer_parked.store(true, Ordering::SeqCst);
        if !self.batches.is_empty() {
            self.shared.consumer_parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Marks the consumer awake again.
    pub fn unpark(&self) {
        self.shared.consumer_parked.store(false, Ordering::SeqCst);
    }

    /// Batches waiting.
    pub fn queued(&self) -> usize {
        self.batches.len()
    }

    /// Whether every producer is gone and nothing is left.
    pub fn is_finished(&self) -> bool {
        self.batches.is_empty() && self.producers.strong_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use crate::decision::{Reason, Rule};

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn batch(parcel_id: u64) -> Batch {
        let mut batch = Batch::new(4, false);
        batch.push(decision(parcel_id), &ScanFacts::default());
        batch
    }

    fn decision(parcel_id: u64) -> Decision {
        Decision {
            parcel_id,
            scanner_id: 1,
            chute: 5,
            reason: Reason::SortedPrimary,
            rule: Rule::Exact,
            plan_version: 1,
            preadvice_seq: 0,
            late_chute: 996,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn full_queue_returns_the_batch_and_parked_consumer_is_woken_once() {
        let waker = Arc::new(CountingWaker::default());
        let (tx, rx) = batch_queue(2, 4, false, waker.clone());
        assert!(tx.try_send(batch(1)).is_ok());
        assert_eq!(waker.0.load(Ordering::SeqCst), 0, "consumer was awake");
        assert!(!rx.park(), "work is waiting, so the consumer must not park");
        assert!(tx.try_send(batch(2)).is_ok());
        let refused = tx.try_send(batch(3)).unwrap_err();
        assert_eq!(refused.decisions()[0].parcel_id, 3);

        let first = rx.try_recv().unwrap();
        assert_eq!(first.decisions()[0].parcel_id, 1);
        rx.recycle(first);
        assert!(tx.empty_batch().is_empty());
        let second = rx.try_recv().unwrap();
        assert_eq!(second.decisions()[0].parcel_id, 2);
        assert!(rx.park());
        assert!(tx.try_send(batch(4)).is_ok());
        assert!(tx.try_send(batch(5)).is_ok());
        assert_eq!(
            waker.0.load(Ordering::SeqCst),
            1,
            "woken once, not per batch"
        );
    }

    #[test]
    fn the_hand_off_stamp_goes_with_the_batch_and_not_with_its_recycled_memory() {
        let (tx, rx) = batch_queue(2, 4, false, Arc::new(CountingWaker::default()));
        let mut sent = batch(1);
        assert_eq!(sent.handed_at(), None);
        let at = Instant::now();
        sent.stamp_handed(at);
        assert!(tx.try_send(sent).is_ok());
        let got = rx.try_recv().expect("queued");
        assert_eq!(got.handed_at(), Some(at));
        rx.recycle(got);
        assert_eq!(tx.empty_batch().handed_at(), None);
    }

    #[test]
    fn finished_when_producers_are_gone_and_queue_empty() {
        let (tx, rx) = batch_queue(2, 4, false, Arc::new(CountingWaker::default()));
        assert!(tx.try_send(batch(1)).is_ok());
        drop(tx);
        assert!(!rx.is_finished());
        assert!(rx.try_recv().is_some());
        assert!(rx.is_finished());
    }

    #[test]
    fn facts_travel_with_their_batch_and_are_recycled_with_it() {
        let (tx, rx) = batch_queue(2, 2, true, Arc::new(CountingWaker::default()));
        let codes: [&[u8]; 2] = [b"YT1", b"JD2"];
        let facts = ScanFacts {
            barcodes: crate::wire::Barcodes::from_slice(&codes).unwrap_or_default(),
            destination: b"330106",
            plan_name: "wave-1",
            ..ScanFacts::default()
        };
        let mut batch = tx.empty_batch();
        assert!(batch.carries_facts());
        batch.push(decision(1), &facts);
        batch.push(decision(2), &ScanFacts::default());
        assert_eq!(batch.room(), 0, "two parcels fill a batch of two");
        assert!(tx.try_send(batch).is_ok());
        let got = rx.try_recv().expect("queued");
        assert_eq!(got.facts(0), Some(facts));
        assert_eq!(got.facts(1), Some(ScanFacts::default()));
        rx.recycle(got);
        let again = tx.empty_batch();
        assert!(again.is_empty() && again.carries_facts());
        assert_eq!((again.room(), again.facts(0)), (2, None));
        let (plain, _rx) = batch_queue(1, 2, false, Arc::new(CountingWaker::default()));
        let mut batch = plain.empty_batch();
        batch.push(decision(3), &facts);
        assert_eq!(batch.facts(0), None, "events off: nothing copied");
    }
}
