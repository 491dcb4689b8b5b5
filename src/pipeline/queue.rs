//! The hand-off from ingress workers to the PLC thread: a bounded queue of decision
//! batches, with a parking flag so an idle consumer sleeps instead of spinning and a
//! producer wakes it only when it is asleep.
//!
//! Batches are recycled through a second bounded queue so the steady state allocates
//! nothing. This module does not decide what to do when the queue is full: the producer
//! keeps its batch and stops reading (backpressure).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

use super::decide::Decision;

/// A batch of decisions.
pub type Batch = Vec<Decision>;

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

/// A queue of at most `queue_batches_max` batches of at most `batch_parcels_max` decisions.
pub fn batch_queue(
    queue_batches_max: usize,
    batch_parcels_max: usize,
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
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_parcels_max))
    }

    /// Most decisions a batch should hold.
    pub fn batch_parcels_max(&self) -> usize {
        self.batch_parcels_max
    }

    /// Hands a batch over. When the queue is full the batch comes back: the caller keeps it
    /// and stops reading until a later attempt succeeds.
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

    use crate::decision::Reason;

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn decision(parcel_id: u64) -> Decision {
        Decision {
            parcel_id,
            scanner_id: 1,
            chute: 5,
            reason: Reason::SortedPrimary,
            plan_version: 1,
            preadvice_seq: 0,
            late_chute: 996,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn full_queue_returns_the_batch_and_parked_consumer_is_woken_once() {
        let waker = Arc::new(CountingWaker::default());
        let (tx, rx) = batch_queue(2, 4, waker.clone());
        assert!(tx.try_send(vec![decision(1)]).is_ok());
        assert_eq!(waker.0.load(Ordering::SeqCst), 0, "consumer was awake");
        assert!(!rx.park(), "work is waiting, so the consumer must not park");
        assert!(tx.try_send(vec![decision(2)]).is_ok());
        let refused = tx.try_send(vec![decision(3)]).unwrap_err();
        assert_eq!(refused[0].parcel_id, 3);

        let first = rx.try_recv().unwrap();
        assert_eq!(first[0].parcel_id, 1);
        rx.recycle(first);
        assert!(tx.empty_batch().is_empty());
        let second = rx.try_recv().unwrap();
        assert_eq!(second[0].parcel_id, 2);
        assert!(rx.park());
        assert!(tx.try_send(vec![decision(4)]).is_ok());
        assert!(tx.try_send(vec![decision(5)]).is_ok());
        assert_eq!(
            waker.0.load(Ordering::SeqCst),
            1,
            "woken once, not per batch"
        );
    }

    #[test]
    fn finished_when_producers_are_gone_and_queue_empty() {
        let (tx, rx) = batch_queue(2, 4, Arc::new(CountingWaker::default()));
        assert!(tx.try_send(vec![decision(1)]).is_ok());
        drop(tx);
        assert!(!rx.is_finished());
        assert!(rx.try_recv().is_some());
        assert!(rx.is_finished());
    }
}
