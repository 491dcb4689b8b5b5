//! A scanner session: one scanner connection's bytes, framing and clocks, and the rule
//! that turns its complete frames into decisions.
//!
//! Sans-IO: the driver reads into the session ([`ScannerSession::serve`] takes a read
//! function, [`ScannerSession::handle_input`] takes bytes), tells it about the end of
//! the stream ([`ScannerSession::handle_eof`]) and the passing of time
//! ([`ScannerSession::handle_timeout`]), and gives it a [`DecisionSink`] (the batch
//! hand-off) and a [`SessionObserver`] (counts, warnings, the simulator's checks). It
//! decodes a window of complete frames ahead and warms the plan for all of them before
//! deciding any, resynchronises a full buffer at the next possible frame start, and when
//! the connection ends (end of stream, error, deadline, stop) it still decides the
//! complete frames it holds (salvage) before it reports itself closed. It does not own
//! the socket, the accept policy or the scheduling between connections.

use std::time::{Duration, Instant};

use crate::pipeline::decide::{Decision, decide};
use crate::plan::{DefaultKind, PlanView};
use crate::plc::ChuteStateTable;
use crate::wire::{DecodeError, Decoded, Frame, Framing, ScanFrame};

use super::input::{Expiry, InputBuffer};

/// How often a driver should call [`ScannerSession::handle_timeout`] at least.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// Reads per connection per turn before the next connection gets its turn.
pub const READS_PER_TURN_MAX: usize = 4;
/// Complete frames decoded ahead, so their plan lookups' cache misses overlap.
pub const WARM_AHEAD_FRAMES: usize = 16;

/// A session's buffer size and clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Receive buffer; a frame must fit in it.
    pub buffer_bytes: usize,
    /// Time allowed to complete a started frame.
    pub frame_deadline: Duration,
    /// Time allowed without any byte.
    pub idle_timeout: Duration,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The scanner closed its end.
    ClosedByScanner,
    /// Reading failed.
    ConnectionError,
    /// A started frame did not complete in time.
    FrameDeadline,
    /// Nothing arrived for too long.
    Idle,
    /// The daemon is stopping.
    Stopping,
}

impl Ending {
    /// Words for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Ending::ClosedByScanner => "closed by scanner",
            Ending::ConnectionError => "connection error",
            Ending::FrameDeadline => "frame not completed within scanners.frame_deadline_ms",
            Ending::Idle => "idle longer than scanners.idle_timeout_ms",
            Ending::Stopping => "daemon stopping",
        }
    }
}

/// Where decisions go: the batch hand-off to the PLC side.
pub trait DecisionSink {
    /// Decisions it takes before it must be flushed; 0 when full.
    fn room(&self) -> usize;
    /// Hands what it holds over; false when the hand-off refused it (it keeps it).
    fn flush(&mut self) -> bool;
    /// Takes one decision and the scan it came from, decided by the plan named
    /// `plan_name` (the scan's facts are copied only when sort events are on); called
    /// only while `room() > 0`.
    fn push(&mut self, decision: Decision, scan: &ScanFrame<'_>, plan_name: &str);
}

/// Bytes a session dropped, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// The counter name (`bad_magic`, `truncated`, `truncated_at_close`, ...).
    pub kind: &'static str,
    /// How many bytes.
    pub bytes: usize,
    /// The decoder's error, when the bytes were bad (not merely cut off).
    pub error: Option<DecodeError>,
}

/// Told what a session did. Every method has a do-nothing default.
pub trait SessionObserver {
    /// `count` bytes were read.
    fn on_bytes(&mut self, _count: usize) {}
    /// A frame of any kind was decoded.
    fn on_frame(&mut self) {}
    /// A scan was decoded and decided.
    fn on_scan(&mut self, _scan: &ScanFrame<'_>, _decision: &Decision) {}
    /// A HELLO named the scanner; `changed` when the id differs from the one before.
    fn on_hello(&mut self, _scanner_id: u32, _changed: bool) {}
    /// Bytes were dropped.
    fn on_skipped(&mut self, _now: Instant, _skipped: Skipped) {}
}

/// What the plan and the chute states say, and the worker's synthetic parcel ids.
#[derive(Debug)]
pub struct Decider<'a> {
    /// The plan and pre-advice overlay of this turn.
    pub plan: &'a PlanView,
    /// Chute availability reported by the PLC.
    pub chute_states: &'a ChuteStateTable,
    /// The last synthetic parcel id handed out (for frames that carry none).
    pub synthetic_parcel_id: &'a mut u64,
}

/// What one read by the driver gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    /// This many bytes (more than 0).
    Data(usize),
    /// Nothing now.
    WouldBlock,
    /// The peer closed its end.
    Eof,
    /// The read failed.
    Error,
}

/// What a turn of [`ScannerSession::serve`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Read until the socket had nothing more.
    Drained,
    /// Has more to read; give it another turn.
    More,
    /// The hand-off is full; resume this session later.
    Blocked,
    /// Ended and salvaged: close it ([`ScannerSession::close`]).
    Closed,
}

/// One scanner connection, sans IO.
#[derive(Debug)]
pub struct ScannerSession {
    input: InputBuffer,
    framing: Framing,
    limits: SessionLimits,
    /// Scanner id for frames that carry none (text), or announced by HELLO.
    scanner_id: u32,
    scans: u64,
    ending: Option<Ending>,
}

impl ScannerSession {
    /// A session opened at `now`; `scanner_id` names text frames until a HELLO does.
    pub fn new(
        framing: Framing,
        scanner_id: u32,
        limits: SessionLimits,
        now: Instant,
    ) -> ScannerSession {
        ScannerSession {
            input: InputBuffer::new(limits.buffer_bytes, now),
            framing,
            limits,
            scanner_id,
            scans: 0,
            ending: None,
        }
    }

    /// The scanner id text frames get.
    pub fn scanner_id(&self) -> u32 {
        self.scanner_id
    }

    /// Scans decided so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Why it ends, once it does.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// Bytes received and not yet decoded.
    pub fn unread_bytes(&self) -> usize {
        self.input.unread().len()
    }

    /// Takes as many of `bytes` as fit; returns how many. Decide them with
    /// [`ScannerSession::poll_decisions`].
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> usize {
        let spare = self.input.spare();
        let count = spare.len().min(bytes.len());
        if let (Some(into), Some(from)) = (spare.get_mut(..count), bytes.get(..count)) {
            into.copy_from_slice(from);
        }
        self.input.commit(count, now);
        count
    }

    /// The stream ended (or must end): the complete frames held are still decided.
    pub fn handle_eof(&mut self, why: Ending) {
        self.ending.get_or_insert(why);
    }

    /// Checks the clocks at `now`; returns the ending when one just ran out.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Ending> {
        if self.ending.is_some() {
            return None;
        }
        let why =
            match self
                .input
                .expiry(now, self.limits.frame_deadline, self.limits.idle_timeout)?
            {
                Expiry::FrameDeadline => Ending::FrameDeadline,
                Expiry::Idle => Ending::Idle,
            };
        self.ending = Some(why);
        Some(why)
    }

    /// When [`ScannerSession::handle_timeout`] may next end the session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ending.is_some() {
            return None;
        }
        Some(
            self.input
                .next_expiry(self.limits.frame_deadline, self.limits.idle_timeout),
        )
    }

    /// One turn: decides what is buffered, then reads (a few reads at most) through
    /// `read` and decides after each. An ending session decides what it holds and
    /// reports [`Served::Closed`].
    pub fn serve(
        &mut self,
        now: Instant,
        mut read: impl FnMut(&mut [u8]) -> ReadResult,
        decider: &mut Decider<'_>,
        sink: &mut impl DecisionSink,
        observer: &mut impl SessionObserver,
    ) -> Served {
        if self.ending.is_some() {
            return self.salvage(now, decider, sink, observer);
        }
        // Frames left over from a blocked turn go first.
        if !self.poll_decisions(now, decider, sink, observer) {
            return Served::Blocked;
        }
        for _ in 0..READS_PER_TURN_MAX {
            match read(self.input.spare()) {
                ReadResult::Data(count) => {
                    self.input.commit(count, now);
                    observer.on_bytes(count);
                    if !self.poll_decisions(now, decider, sink, observer) {
                        return Served::Blocked;
                    }
                }
                ReadResult::WouldBlock => return Served::Drained,
                ReadResult::Eof => {
                    self.handle_eof(Ending::ClosedByScanner);
                    return self.salvage(now, decider, sink, observer);
                }
                ReadResult::Error => {
                    self.handle_eof(Ending::ConnectionError);
                    return self.salvage(now, decider, sink, observer);
                }
            }
        }
        Served::More
    }

    fn salvage(
        &mut self,
        now: Instant,
        decider: &mut Decider<'_>,
        sink: &mut impl DecisionSink,
        observer: &mut impl SessionObserver,
    ) -> Served {
        if self.poll_decisions(now, decider, sink, observer) {
            Served::Closed
        } else {
            Served::Blocked
        }
    }

    /// The session is closed: what is left unread counts as skipped.
    pub fn close(&mut self, now: Instant, observer: &mut impl SessionObserver) {
        let leftover = self.input.unread().len();
        if leftover > 0 {
            observer.on_skipped(
                now,
                Skipped {
                    kind: "truncated_at_close",
                    bytes: leftover,
                    error: None,
                },
            );
            self.input.consume(leftover, now);
        }
        self.ending.get_or_insert(Ending::Stopping);
    }

    /// Decodes and decides every complete frame in the buffer. A full buffer, or an
    /// ending session, drops an incomplete frame at the front up to the next possible
    /// frame start, so complete frames behind it are still found. Returns false when
    /// the sink is full; the undecided frames stay in the buffer.
    pub fn poll_decisions(
        &mut self,
        now: Instant,
        decider: &mut Decider<'_>,
        sink: &mut impl DecisionSink,
        observer: &mut impl SessionObserver,
    ) -> bool {
        let ending = self.ending.is_some();
        loop {
            if sink.room() == 0 && !sink.flush() {
                return false;
            }
            let unread = self.input.unread();
            // Decode a window of complete frames ahead and warm the plan for all of them
            // before deciding any: their cache misses overlap instead of queueing.
            let room = sink.room().clamp(1, WARM_AHEAD_FRAMES);
            let mut ahead: [Option<Frame<'_>>; WARM_AHEAD_FRAMES] =
                [const { None }; WARM_AHEAD_FRAMES];
            let mut decoded = 0;
            let mut offset = 0;
            let mut warmed = 0u64;
            let mut stopped_at = Decoded::NeedMore;
            while decoded < room {
                match self
                    .framing
                    .decode(unread.get(offset..).unwrap_or_default())
                {
                    Decoded::Frame { frame, consumed } => {
                        if let Frame::Scan(scan) = &frame {
                            warmed ^= decider
                                .plan
                                .warm(scan.barcodes.as_slice(), scan.destination);
                        }
                        if let Some(slot) = ahead.get_mut(decoded) {
                            *slot = Some(frame);
                        }
                        decoded += 1;
                        offset += consumed;
                    }
                    other => {
                        stopped_at = other;
                        break;
                    }
                }
            }
            std::hint::black_box(warmed);
            if decoded > 0 {
                let mut state = Scanner {
                    framing: &self.framing,
                    scanner_id: &mut self.scanner_id,
                    scans: &mut self.scans,
                };
                for frame in ahead.iter().take(decoded).flatten() {
                    state.decide_frame(now, frame, decider, sink, observer);
                }
                self.input.consume(offset, now);
                continue;
            }
            // No complete frame at the front: act on what the decoder said instead.
            let skipped = match stopped_at {
                Decoded::Frame { consumed, .. } => Skipped {
                    kind: "",
                    bytes: consumed,
                    error: None,
                },
                Decoded::NeedMore if unread.is_empty() => return true,
                Decoded::NeedMore if ending || self.input.is_full() => {
                    // Nothing more will complete this frame (or it cannot fit): skip to
                    // where the next frame could start.
                    Skipped {
                        kind: "truncated",
                        bytes: self.framing.resync_offset(unread).max(1),
                        error: None,
                    }
                }
                Decoded::NeedMore => return true,
                Decoded::Skip { error, skip } => Skipped {
                    kind: error.kind(),
                    bytes: skip.max(1),
                    error: Some(error),
                },
            };
            if !skipped.kind.is_empty() {
                observer.on_skipped(now, skipped);
            }
            self.input.consume(skipped.bytes, now);
        }
    }
}

/// The parts of a session a decoded frame may change (the frame borrows the buffer).
struct Scanner<'a> {
    framing: &'a Framing,
    scanner_id: &'a mut u32,
    scans: &'a mut u64,
}

impl Scanner<'_> {
    fn decide_frame(
        &mut self,
        now: Instant,
        frame: &Frame<'_>,
        decider: &mut Decider<'_>,
        sink: &mut impl DecisionSink,
        observer: &mut impl SessionObserver,
    ) {
        observer.on_frame();
        match frame {
            Frame::Scan(scan) => {
                *self.scans += 1;
                let scanner_id = match self.framing {
                    Framing::Binary => scan.scanner_id,
                    Framing::Text(_) => *self.scanner_id,
                };
                let parcel_id = if scan.parcel_id == 0 {
                    *decider.synthetic_parcel_id += 1;
                    *decider.synthetic_parcel_id
                } else {
                    scan.parcel_id
                };
                let view = decider.plan;
                let decided = decide(
                    view,
                    decider.chute_states,
                    scan.flags,
                    scan.barcodes.as_slice(),
                    scan.destination,
                );
                let decision = Decision {
                    parcel_id,
                    scanner_id,
                    chute: decided.chute,
                    reason: decided.reason,
                    rule: decided.rule,
                    plan_version: view.plan.version(),
                    preadvice_seq: decided.preadvice_seq,
                    late_chute: view.plan.default_chute(DefaultKind::Late),
                    received_at: now,
                };
                observer.on_scan(scan, &decision);
                sink.push(decision, scan, view.plan.name());
            }
            Frame::Hello(hello) => {
                let changed = *self.scanner_id != hello.scanner_id;
                *self.scanner_id = hello.scanner_id;
                observer.on_hello(hello.scanner_id, changed);
            }
            Frame::Heartbeat(_) => {}
        }
    }
}
