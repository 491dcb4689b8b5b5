//! A scanner session: one scanner connection's bytes, framing and clocks, and the rule
//! that turns its complete frames into decisions.
//!
//! Sans-IO: the driver reads into the session ([`ScannerSession::serve`] takes a read
//! function, [`ScannerSession::handle_input`] takes bytes), tells it about the end of
//! the stream ([`ScannerSession::handle_eof`]) and the passing of time
//! ([`ScannerSession::handle_timeout`]), and gives it a [`DecisionSink`] (the batch
//! hand-off) and a [`SessionObserver`] (counts, warnings, the simulator's checks). It
//! decodes a window of complete frames ahead and prefetches the plan for all of them
//! before deciding any, resynchronises a full buffer at the next possible frame start, and when
//! the connection ends (end of stream, error, deadline, stop) it still decides the
//! complete frames it holds (salvage) before it reports itself closed. It does not own
//! the socket, the accept policy or the scheduling between connections.

use std::time::{Duration, Instant};

use crate::pipeline::decide::{Decision, decide};
use crate::plan::{DefaultKind, PlanView};
use crate::plc::ChuteStateTable;
use crate::wire::{Decoded, Frame, FrameDecodeError, Framing, ScanFrame};

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
    pub error: Option<FrameDecodeError>,
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
            // Decode a window of complete frames ahead and prefetch the plan's buckets for
            // all of them, then their records, before deciding any: their cache and TLB
            // misses overlap instead of queueing.
            let room = sink.room().clamp(1, WARM_AHEAD_FRAMES);
            let mut ahead: [Option<Frame<'_>>; WARM_AHEAD_FRAMES] =
                [const { None }; WARM_AHEAD_FRAMES];
            let mut decoded = 0;
            let mut offset = 0;
            let mut stopped_at = Decoded::NeedMore;
            while decoded < room {
                match self
                    .framing
                    .decode(unread.get(offset..).unwrap_or_default())
                {
                    Decoded::Frame { frame, consumed } => {
                        if let Frame::Scan(scan) = &frame {
                            decider
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
            if decoded > 0 {
                for frame in ahead.iter().take(decoded).flatten() {
                    if let Frame::Scan(scan) = frame {
                        decider
                            .plan
                            .warm_records(scan.barcodes.as_slice(), scan.destination);
                    }
                }
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

#[cfg(test)]
mod tests {
    //! The session on its own, driven by hand: every case is deterministic (fixed bytes,
    //! a fixed clock), and each names the rule it pins down.

    use super::*;
    use crate::decision::Reason;
    use crate::plan::{Plan, PlanHandle, compile_str};
    use crate::wire::{
        self, Barcodes, ETX, FRAME_TYPE_SCAN, Hello, MAGIC, STX, ScanFlags, TextProfile,
    };

    const PLAN_CSV: &str = "kind,key,chutes\nmeta,name,session test\nmeta,version,3\n\
        exact,PARCEL-A,11\nexact,PARCEL-B,12\n\
        default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n";

    const LIMITS: SessionLimits = SessionLimits {
        buffer_bytes: 4096,
        frame_deadline: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(1000),
    };

    fn plan() -> PlanHandle {
        let bytes = compile_str("session test", PLAN_CSV).expect("the test plan compiles");
        PlanHandle::new(Plan::from_bytes(bytes).expect("the test plan opens"))
    }

    fn scan(scanner_id: u32, parcel_id: u64, key: &[u8]) -> Vec<u8> {
        let codes: [&[u8]; 1] = [key];
        let frame = Frame::Scan(ScanFrame {
            scanner_id,
            sequence: 1,
            parcel_id,
            scanned_at_us: 0,
            barcodes: Barcodes::from_slice(&codes).expect("one barcode fits"),
            destination: None,
            weight_g: 0,
            length_mm: 0,
            width_mm: 0,
            height_mm: 0,
            flags: ScanFlags::default(),
        });
        let mut bytes = Vec::new();
        wire::encode(&frame, &mut bytes).expect("encodes");
        bytes
    }

    fn hello(scanner_id: u32) -> Vec<u8> {
        let frame = Frame::Hello(Hello {
            scanner_id,
            protocol_version: 1,
            heartbeat_interval_ms: 0,
            sent_at_us: 0,
        });
        let mut bytes = Vec::new();
        wire::encode(&frame, &mut bytes).expect("encodes");
        bytes
    }

    /// The start of a scan frame that declares 1000 bytes and never completes.
    fn cut_off() -> Vec<u8> {
        let mut bytes = vec![MAGIC[0], MAGIC[1], 1, FRAME_TYPE_SCAN, 0xE8, 0x03, 0, 0];
        bytes.extend_from_slice(&[b'x'; 40]);
        bytes
    }

    /// A batch of `capacity` decisions; `refuse` makes a flush fail (the queue is full).
    struct Sink {
        held: Vec<Decision>,
        flushed: Vec<Decision>,
        capacity: usize,
        refuse: bool,
    }

    impl Sink {
        fn new(capacity: usize) -> Sink {
            Sink {
                held: Vec::new(),
                flushed: Vec::new(),
                capacity,
                refuse: false,
            }
        }

        fn all(&self) -> Vec<&Decision> {
            self.flushed.iter().chain(&self.held).collect()
        }
    }

    impl DecisionSink for Sink {
        fn room(&self) -> usize {
            self.capacity - self.held.len()
        }
        fn flush(&mut self) -> bool {
            if self.refuse {
                return false;
            }
            self.flushed.append(&mut self.held);
            true
        }
        fn push(&mut self, decision: Decision, _scan: &ScanFrame<'_>, _plan_name: &str) {
            assert!(self.room() > 0, "pushed into a full sink");
            self.held.push(decision);
        }
    }

    #[derive(Default)]
    struct Seen {
        bytes: usize,
        frames: usize,
        scans: usize,
        hellos: Vec<(u32, bool)>,
        skipped: Vec<Skipped>,
    }

    impl SessionObserver for Seen {
        fn on_bytes(&mut self, count: usize) {
            self.bytes += count;
        }
        fn on_frame(&mut self) {
            self.frames += 1;
        }
        fn on_scan(&mut self, _scan: &ScanFrame<'_>, _decision: &Decision) {
            self.scans += 1;
        }
        fn on_hello(&mut self, scanner_id: u32, changed: bool) {
            self.hellos.push((scanner_id, changed));
        }
        fn on_skipped(&mut self, _now: Instant, skipped: Skipped) {
            self.skipped.push(skipped);
        }
    }

    /// Runs `poll_decisions` over the test plan with all chutes available.
    fn poll(
        session: &mut ScannerSession,
        now: Instant,
        synthetic: &mut u64,
        sink: &mut Sink,
        seen: &mut Seen,
    ) -> bool {
        let handle = plan();
        let view = handle.view();
        let chutes = ChuteStateTable::new();
        let mut decider = Decider {
            plan: &view,
            chute_states: &chutes,
            synthetic_parcel_id: synthetic,
        };
        session.poll_decisions(now, &mut decider, sink, seen)
    }

    /// Runs one `serve` turn whose reads hand out `reads` in order, then `WouldBlock`.
    fn serve(
        session: &mut ScannerSession,
        now: Instant,
        reads: &mut Vec<ReadResult>,
        data: &mut &[u8],
        sink: &mut Sink,
        seen: &mut Seen,
    ) -> Served {
        let handle = plan();
        let view = handle.view();
        let chutes = ChuteStateTable::new();
        let mut synthetic = 0;
        let mut decider = Decider {
            plan: &view,
            chute_states: &chutes,
            synthetic_parcel_id: &mut synthetic,
        };
        let read = |into: &mut [u8]| {
            if reads.is_empty() {
                return ReadResult::WouldBlock;
            }
            match reads.remove(0) {
                ReadResult::Data(count) => {
                    let whole: &[u8] = data;
                    let (head, rest) = whole.split_at(count.min(into.len()).min(whole.len()));
                    into[..head.len()].copy_from_slice(head);
                    *data = rest;
                    ReadResult::Data(head.len())
                }
                other => other,
            }
        };
        session.serve(now, read, &mut decider, sink, seen)
    }

    #[test]
    fn endings_have_distinct_names() {
        let names = [
            Ending::ClosedByScanner,
            Ending::ConnectionError,
            Ending::FrameDeadline,
            Ending::Idle,
            Ending::Stopping,
        ]
        .map(Ending::as_str);
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(names.iter().all(|name| !name.is_empty()), "{names:?}");
    }

    #[test]
    fn binary_frames_are_decided_against_the_plan_with_the_frames_scanner_id() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let mut bytes = hello(41);
        bytes.extend(scan(41, 7, b"PARCEL-A"));
        bytes.extend(scan(41, 8, b"PARCEL-B"));
        bytes.extend(scan(41, 0, b"UNKNOWN"));
        bytes.extend(scan(41, 0, b"PARCEL-A"));
        assert_eq!(session.handle_input(now, &bytes), bytes.len());
        assert_eq!(session.unread_bytes(), bytes.len());
        let (mut sink, mut seen, mut synthetic) = (Sink::new(64), Seen::default(), 500);
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        assert_eq!(session.unread_bytes(), 0);
        assert_eq!(session.scans(), 4);
        assert_eq!(session.scanner_id(), 41);
        assert_eq!((seen.frames, seen.scans), (5, 4));
        assert_eq!(seen.hellos, vec![(41, true)]);
        let got: Vec<_> = sink
            .all()
            .iter()
            .map(|d| (d.parcel_id, d.scanner_id, d.chute, d.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (7, 41, 11, Reason::SortedPrimary),
                (8, 41, 12, Reason::SortedPrimary),
                (501, 41, 999, Reason::NoRule),
                (502, 41, 11, Reason::SortedPrimary),
            ]
        );
        assert_eq!(synthetic, 502);
        for decision in sink.all() {
            assert_eq!(
                (
                    decision.plan_version,
                    decision.late_chute,
                    decision.received_at
                ),
                (3, 996, now)
            );
        }
        // The same HELLO again changes nothing; another id does.
        let mut again = hello(41);
        again.extend(hello(42));
        session.handle_input(now, &again);
        poll(&mut session, now, &mut synthetic, &mut sink, &mut seen);
        assert_eq!(seen.hellos, vec![(41, true), (41, false), (42, true)]);
        assert_eq!(session.scanner_id(), 42);
    }

    #[test]
    fn text_frames_get_the_sessions_scanner_id() {
        let now = Instant::now();
        let profile = TextProfile::builtin("sick-clv").expect("built in");
        let mut session = ScannerSession::new(Framing::Text(profile), 77, LIMITS, now);
        let mut bytes = vec![STX];
        bytes.extend_from_slice(b"PARCEL-B");
        bytes.push(ETX);
        session.handle_input(now, &bytes);
        let (mut sink, mut seen, mut synthetic) = (Sink::new(8), Seen::default(), 0);
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        let got: Vec<_> = sink
            .all()
            .iter()
            .map(|d| (d.parcel_id, d.scanner_id, d.chute))
            .collect();
        assert_eq!(got, vec![(1, 77, 12)]);
    }

    #[test]
    fn input_beyond_the_buffer_is_not_taken() {
        let now = Instant::now();
        let limits = SessionLimits {
            buffer_bytes: 100,
            ..LIMITS
        };
        let mut session = ScannerSession::new(Framing::Binary, 0, limits, now);
        assert_eq!(session.handle_input(now, &[0u8; 60]), 60);
        assert_eq!(session.handle_input(now, &[0u8; 60]), 40);
        assert_eq!(session.unread_bytes(), 100);
        assert_eq!(session.handle_input(now, &[0u8; 1]), 0);
    }

    #[test]
    fn garbage_is_skipped_as_the_decoder_says_and_counted_by_kind() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let mut bytes = b"zz".to_vec();
        bytes.extend(scan(5, 1, b"PARCEL-A"));
        session.handle_input(now, &bytes);
        let (mut sink, mut seen, mut synthetic) = (Sink::new(8), Seen::default(), 0);
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        assert_eq!(sink.all().len(), 1);
        let skipped: usize = seen.skipped.iter().map(|s| s.bytes).sum();
        assert_eq!(skipped, 2);
        assert!(
            seen.skipped
                .iter()
                .all(|s| s.error.is_some() && !s.kind.is_empty())
        );
    }

    #[test]
    fn an_incomplete_frame_waits_unless_the_buffer_is_full() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let frame = scan(5, 1, b"PARCEL-A");
        let (head, tail) = frame.split_at(frame.len() / 2);
        session.handle_input(now, head);
        let (mut sink, mut seen, mut synthetic) = (Sink::new(8), Seen::default(), 0);
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        assert_eq!(session.unread_bytes(), head.len());
        assert!(seen.skipped.is_empty());
        session.handle_input(now, tail);
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        assert_eq!(sink.all().len(), 1);

        // A full buffer holding a cut-off frame drops it up to the next frame start.
        let limits = SessionLimits {
            buffer_bytes: 256,
            ..LIMITS
        };
        let mut session = ScannerSession::new(Framing::Binary, 0, limits, now);
        let mut bytes = cut_off();
        while bytes.len() < 256 {
            bytes.extend(scan(5, 2, b"PARCEL-B"));
        }
        let taken = session.handle_input(now, &bytes);
        assert_eq!(taken, 256);
        let (mut sink, mut seen) = (Sink::new(64), Seen::default());
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        let truncated: Vec<_> = seen
            .skipped
            .iter()
            .filter(|s| s.kind == "truncated")
            .collect();
        assert_eq!(truncated.len(), 1);
        assert_eq!(truncated[0].bytes, cut_off().len());
        assert!(!sink.all().is_empty());
    }

    #[test]
    fn a_full_sink_that_cannot_flush_blocks_and_keeps_the_frames() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let mut bytes = Vec::new();
        for parcel_id in 1..=5 {
            bytes.extend(scan(5, parcel_id, b"PARCEL-A"));
        }
        session.handle_input(now, &bytes);
        let (mut sink, mut seen, mut synthetic) = (Sink::new(2), Seen::default(), 0);
        sink.refuse = true;
        assert!(!poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        assert_eq!(sink.held.len(), 2);
        assert_eq!(session.scans(), 2);
        assert_eq!(session.unread_bytes(), bytes.len() / 5 * 3);
        sink.refuse = false;
        assert!(poll(
            &mut session,
            now,
            &mut synthetic,
            &mut sink,
            &mut seen
        ));
        let parcels: Vec<_> = sink.all().iter().map(|d| d.parcel_id).collect();
        assert_eq!(parcels, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn serve_reads_a_few_times_a_turn_and_salvages_at_the_end_of_the_stream() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let frame = scan(5, 1, b"PARCEL-A");
        let mut stream: Vec<u8> = Vec::new();
        for _ in 0..READS_PER_TURN_MAX + 1 {
            stream.extend(&frame);
        }
        let mut data = stream.as_slice();
        let (mut sink, mut seen) = (Sink::new(64), Seen::default());
        let mut reads = vec![ReadResult::Data(frame.len()); READS_PER_TURN_MAX + 1];
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::More
        );
        assert_eq!(seen.bytes, frame.len() * READS_PER_TURN_MAX);
        assert_eq!(sink.all().len(), READS_PER_TURN_MAX);
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Drained
        );
        assert_eq!(sink.all().len(), READS_PER_TURN_MAX + 1);
        assert_eq!(session.ending(), None);

        // A complete frame and half of another, then the end of the stream.
        let mut tail = frame.clone();
        tail.extend_from_slice(&frame[..10]);
        let mut data = tail.as_slice();
        let mut reads = vec![ReadResult::Data(tail.len()), ReadResult::Eof];
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Closed
        );
        assert_eq!(session.ending(), Some(Ending::ClosedByScanner));
        assert_eq!(sink.all().len(), READS_PER_TURN_MAX + 2);
        session.close(now, &mut seen);
        assert_eq!(
            seen.skipped.last().map(|s| (s.kind, s.bytes)),
            Some(("truncated", 10))
        );
        assert_eq!(session.unread_bytes(), 0);
    }

    #[test]
    fn a_read_error_ends_the_session_after_salvage() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let frame = scan(5, 1, b"PARCEL-A");
        let mut data = frame.as_slice();
        let mut reads = vec![ReadResult::Data(frame.len()), ReadResult::Error];
        let (mut sink, mut seen) = (Sink::new(64), Seen::default());
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Closed
        );
        assert_eq!(session.ending(), Some(Ending::ConnectionError));
        assert_eq!(sink.all().len(), 1);
        // An ended session salvages on every later turn without reading.
        let mut reads = vec![ReadResult::Data(1)];
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Closed
        );
        assert_eq!(reads.len(), 1, "an ended session read again");
    }

    #[test]
    fn a_blocked_sink_blocks_serve_before_and_after_reading() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let frame = scan(5, 1, b"PARCEL-A");
        let mut twice = frame.clone();
        twice.extend(&frame);
        let mut data = twice.as_slice();
        let (mut sink, mut seen) = (Sink::new(1), Seen::default());
        sink.refuse = true;
        let mut reads = vec![ReadResult::Data(twice.len())];
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Blocked
        );
        assert_eq!(session.unread_bytes(), frame.len());
        let mut reads = vec![ReadResult::Data(1)];
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Blocked
        );
        assert_eq!(reads.len(), 1, "read while blocked");
        // Ending while blocked: the salvage waits for room too.
        session.handle_eof(Ending::Stopping);
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Blocked
        );
        sink.refuse = false;
        assert_eq!(
            serve(
                &mut session,
                now,
                &mut reads,
                &mut data,
                &mut sink,
                &mut seen
            ),
            Served::Closed
        );
        assert_eq!(sink.all().len(), 2);
    }

    #[test]
    fn clocks_end_a_slow_frame_and_a_silent_connection_once() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, start);
        assert_eq!(session.poll_timeout(), Some(start + LIMITS.idle_timeout));
        assert_eq!(session.handle_timeout(start + ms(1000)), None);
        assert_eq!(session.handle_timeout(start + ms(1001)), Some(Ending::Idle));
        assert_eq!(session.ending(), Some(Ending::Idle));
        assert_eq!(session.handle_timeout(start + ms(5000)), None);
        assert_eq!(session.poll_timeout(), None);

        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, start);
        let frame = scan(5, 1, b"PARCEL-A");
        session.handle_input(start + ms(10), &frame[..5]);
        assert_eq!(session.poll_timeout(), Some(start + ms(110)));
        assert_eq!(session.handle_timeout(start + ms(110)), None);
        assert_eq!(
            session.handle_timeout(start + ms(111)),
            Some(Ending::FrameDeadline)
        );
        // The end of the stream does not replace the first reason.
        session.handle_eof(Ending::ClosedByScanner);
        assert_eq!(session.ending(), Some(Ending::FrameDeadline));
        let mut seen = Seen::default();
        session.close(start + ms(120), &mut seen);
        assert_eq!(
            seen.skipped.last().map(|s| (s.kind, s.bytes)),
            Some(("truncated_at_close", 5))
        );
        assert_eq!(session.ending(), Some(Ending::FrameDeadline));
    }

    #[test]
    fn closing_an_empty_session_skips_nothing_and_ends_it_as_stopping() {
        let now = Instant::now();
        let mut session = ScannerSession::new(Framing::Binary, 0, LIMITS, now);
        let mut seen = Seen::default();
        session.close(now, &mut seen);
        assert!(seen.skipped.is_empty());
        assert_eq!(session.ending(), Some(Ending::Stopping));
    }

    #[test]
    fn windows_prefetched_before_deciding_decide_as_one_parcel_at_a_time() {
        // A seeded random workload over a plan with exact keys, prefixes of several
        // lengths and a full chute: the session (decode a window, prefetch buckets, then
        // records, then decide) must give exactly what `decide` gives frame by frame.
        let mut csv = String::from("kind,key,chutes\nmeta,name,windows\n");
        for index in 0..200 {
            csv.push_str(&format!("exact,YT{index:013},{}|{}\n", 1 + index % 40, 41));
        }
        for (key, chute) in [("33", 50), ("3301", 51), ("330106", 52), ("330106001", 53)] {
            csv.push_str(&format!("prefix,{key},{chute}|54\n"));
        }
        csv.push_str(
            "default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n",
        );
        let handle = PlanHandle::new(
            Plan::from_bytes(compile_str("windows", &csv).expect("compiles")).expect("opens"),
        );
        let view = handle.view();
        let chutes = ChuteStateTable::new();
        chutes.set(7, crate::plc::ChuteState::Full);
        chutes.set(52, crate::plc::ChuteState::Disabled);
        let mut rng = fastrand::Rng::with_seed(0x0b5e55ed);
        let now = Instant::now();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for parcel_id in 1..=2_000u64 {
            let code = |rng: &mut fastrand::Rng| match rng.u8(..3) {
                0 => format!("YT{:013}", rng.u32(..250)),
                1 => format!("JD{:013}", rng.u32(..)),
                _ => String::new(),
            };
            let (first, second) = (code(&mut rng), code(&mut rng));
            let destination = match rng.u8(..4) {
                0 => None,
                1 => Some(format!("3301060010{:02}", rng.u8(..100))),
                2 => Some(format!("33{:04}", rng.u16(..10_000))),
                _ => Some(format!("44{:010}", rng.u32(..))),
            };
            let flags = if rng.u8(..20) == 0 {
                ScanFlags::MULTI_READ
            } else {
                ScanFlags::default()
            };
            let codes: Vec<&[u8]> = [first.as_bytes(), second.as_bytes()]
                .into_iter()
                .filter(|code| !code.is_empty())
                .collect();
            let scan = ScanFrame {
                scanner_id: 9,
                sequence: parcel_id as u32,
                parcel_id,
                scanned_at_us: 0,
                barcodes: Barcodes::from_slice(&codes).expect("two barcodes fit"),
                destination: destination.as_deref().map(str::as_bytes),
                weight_g: 0,
                length_mm: 0,
                width_mm: 0,
                height_mm: 0,
                flags,
            };
            let decided = decide(
                &view,
                &chutes,
                flags,
                scan.barcodes.as_slice(),
                scan.destination,
            );
            expected.push((parcel_id, decided.chute, decided.reason, decided.rule));
            wire::encode(&Frame::Scan(scan), &mut bytes).expect("encodes");
        }
        let limits = SessionLimits {
            buffer_bytes: bytes.len(),
            ..LIMITS
        };
        let mut session = ScannerSession::new(Framing::Binary, 0, limits, now);
        assert_eq!(session.handle_input(now, &bytes), bytes.len());
        // A sink of 37 parcels makes windows of every length up to the maximum.
        let (mut sink, mut seen, mut synthetic) = (Sink::new(37), Seen::default(), 0);
        let mut decider = Decider {
            plan: &view,
            chute_states: &chutes,
            synthetic_parcel_id: &mut synthetic,
        };
        assert!(session.poll_decisions(now, &mut decider, &mut sink, &mut seen));
        let got: Vec<_> = sink
            .all()
            .iter()
            .map(|d| (d.parcel_id, d.chute, d.reason, d.rule))
            .collect();
        assert_eq!(got, expected);
        let reasons: std::collections::HashSet<_> = got.iter().map(|d| d.2).collect();
        assert!(
            reasons.len() >= 5,
            "the workload covers the rules: {reasons:?}"
        );
    }
}
