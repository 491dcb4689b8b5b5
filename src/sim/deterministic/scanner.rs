//! Simulated scanners: each one's traffic (valid scans, duplicates, heartbeats and, for
//! the misbehaving ones, garbage, corrupt frames, truncation and slowloris) and the
//! bytes on their way to sortd, delivered in arbitrary chunks.
//!
//! A scanner speaks sortd's binary frame or, as a text scanner, the `sick-clv` text
//! telegram (`STX code[,code] ETX`, no parcel id, no HELLO, no heartbeat).
//!
//! Every scanner draws from its own generator, forked from the seed, so what one scanner
//! sends never depends on another; that is what lets the isolation check compare a run
//! against a reference run without the garbage. This module produces bytes; decoding
//! them is the simulated ingress's job.

use std::collections::VecDeque;

use crate::wire::{
    self, Barcodes, ETX, FRAME_BYTES_MAX, Frame, Heartbeat, Hello, MAGIC, STX, ScanFlags, ScanFrame,
};

use super::fixtures::{DESTINATIONS, EXACT_KEYS};

/// Bytes a scanner's socket holds before the scanner itself must wait (its kernel send
/// buffer plus sortd's receive buffer).
pub(super) const SOCKET_BYTES_MAX: usize = 64 * 1024;
/// Recent scans kept for re-sending as duplicates.
const RECENT_MAX: usize = 8;

const _: () = assert!(SOCKET_BYTES_MAX >= 4 * FRAME_BYTES_MAX);

/// The bytes between a scanner and sortd: written by the scanner, read by ingress.
#[derive(Debug, Default)]
pub(super) struct Socket {
    bytes: VecDeque<u8>,
    /// Bytes at the front that have arrived and can be read now.
    arrived: usize,
    /// The scanner closed its end once `bytes` is read.
    pub hung_up: bool,
}

/// What a read from a scanner socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// This many bytes.
    Data(usize),
    /// Nothing now.
    WouldBlock,
    /// The scanner closed (or the read buffer was empty, as a real `read` of 0 bytes).
    Closed,
}

impl Socket {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    fn room(&self) -> usize {
        SOCKET_BYTES_MAX.saturating_sub(self.bytes.len())
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend(bytes.iter().copied());
    }

    /// Up to `count` more bytes arrive.
    pub fn arrive(&mut self, count: usize) {
        self.arrived = (self.arrived + count).min(self.bytes.len());
    }

    /// A `read(2)` into `into`.
    pub fn read(&mut self, into: &mut [u8]) -> Read {
        if into.is_empty() {
            return Read::Closed;
        }
        if self.arrived == 0 {
            return if self.hung_up && self.bytes.is_empty() {
                Read::Closed
            } else {
                Read::WouldBlock
            };
        }
        let count = self.arrived.min(into.len());
        for (slot, byte) in into.iter_mut().zip(self.bytes.drain(..count)) {
            *slot = byte;
        }
        self.arrived -= count;
        Read::Data(count)
    }

    /// Loses every byte in flight (the planted transport bug).
    pub fn discard(&mut self) {
        self.bytes.clear();
        self.arrived = 0;
    }

    /// Whether nothing is left to read or to arrive.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What one scanner does.
#[derive(Debug)]
pub(super) struct Scanner {
    pub scanner_id: u32,
    /// Sends only valid frames (the isolation check watches these).
    pub clean: bool,
    /// False in the isolation reference run: bad input is drawn but not sent.
    garbage_enabled: bool,
    /// Speaks the `sick-clv` text telegram instead of the binary frame.
    pub text: bool,
    pub rng: fastrand::Rng,
    next_parcel_id: u64,
    sequence: u32,
    heartbeat_sequence: u32,
    recent: VecDeque<Vec<u8>>,
    /// Valid scans still to send.
    pub quota: u64,
    /// Valid scans sent (duplicates included).
    pub emitted_valid: u64,
    /// Chance per step of sending something, per mille.
    rate_per_mille: u32,
    /// Largest chunk that arrives at once.
    pub chunk_bytes_max: usize,
    /// Sent half a frame and fell silent (slowloris) until the connection is closed.
    stalled: bool,
    scratch: Vec<u8>,
}

impl Scanner {
    pub fn new(
        scanner_id: u32,
        clean: bool,
        garbage_enabled: bool,
        text: bool,
        quota: u64,
        mut rng: fastrand::Rng,
    ) -> Scanner {
        let chunk_bytes_max = [1, 3, 17, 64, 700, 1500, 9000, SOCKET_BYTES_MAX][rng.usize(0..8)];
        let rate_per_mille = rng.u32(50..=600);
        Scanner {
            scanner_id,
            clean,
            garbage_enabled,
            text,
            rng,
            next_parcel_id: 0,
            sequence: 0,
            heartbeat_sequence: 0,
            recent: VecDeque::with_capacity(RECENT_MAX),
            quota,
            emitted_valid: 0,
            rate_per_mille,
            chunk_bytes_max,
            stalled: false,
            scratch: Vec::with_capacity(FRAME_BYTES_MAX),
        }
    }

    /// Whether the scanner still has scans to send.
    pub fn is_producing(&self) -> bool {
        self.quota > 0
    }

    /// The connection was closed (by either side): forget the half-sent frame.
    pub fn on_closed(&mut self) {
        self.stalled = false;
    }

    /// A new connection: HELLO, and sometimes the last scan again (a scanner that is
    /// not sure its last frame arrived).
    pub fn on_connected(&mut self, socket: &mut Socket) {
        if !self.text {
            self.hello(socket);
        }
        // Only while it still has parcels: a scanner that finished stays quiet, so
        // how long the rest of the run lasts does not change what it sent.
        if self.quota > 0 && self.rng.u32(0..100) < 30 {
            if let Some(last) = self.recent.back() {
                socket.write(last);
                self.emitted_valid += 1;
            }
        }
    }

    fn hello(&mut self, socket: &mut Socket) {
        let hello = Frame::Hello(Hello {
            scanner_id: self.scanner_id,
            protocol_version: wire::PROTOCOL_VERSION,
            heartbeat_interval_ms: 0,
            sent_at_us: 0,
        });
        self.scratch.clear();
        if wire::encode(&hello, &mut self.scratch).is_ok() {
            socket.write(&self.scratch);
        }
    }

    /// A `sick-clv` telegram: the codes, or the no-read marker.
    fn encode_text(codes: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![STX];
        if codes.is_empty() {
            bytes.extend_from_slice(b"NoRead");
        }
        for (index, code) in codes.iter().enumerate() {
            if index > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(code);
        }
        bytes.push(ETX);
        bytes
    }

    fn encode_scan(&mut self) -> Option<Vec<u8>> {
        let kind = self.rng.u32(0..100);
        let key = |rng: &mut fastrand::Rng, hit: bool| {
            let index = if hit {
                rng.u64(0..EXACT_KEYS)
            } else {
                rng.u64(EXACT_KEYS..EXACT_KEYS * 2)
            };
            super::fixtures::exact_key(index)
        };
        let first = key(&mut self.rng, !(40..75).contains(&kind));
        let second = key(&mut self.rng, true);
        let destination = DESTINATIONS[self.rng.usize(0..DESTINATIONS.len())].as_bytes();
        let codes: &[&[u8]] = match kind {
            0..=49 => &[&first],
            50..=74 => &[],
            75..=82 => &[&first],
            83..=89 => &[],
            90..=94 => &[&first, &second],
            _ => &[&first],
        };
        let destination = matches!(kind, 50..=82).then_some(destination);
        self.next_parcel_id += 1;
        if self.text {
            return Some(Scanner::encode_text(codes));
        }
        self.sequence = self.sequence.wrapping_add(1);
        let frame = Frame::Scan(ScanFrame {
            scanner_id: self.scanner_id,
            sequence: self.sequence,
            parcel_id: if kind >= 95 { 0 } else { self.next_parcel_id },
            scanned_at_us: u64::from(self.sequence) * 1000,
            barcodes: Barcodes::from_slice(codes)?,
            destination,
            weight_g: 1000,
            length_mm: 300,
            width_mm: 200,
            height_mm: 100,
            flags: ScanFlags::default(),
        });
        let mut bytes = Vec::with_capacity(128);
        wire::encode(&frame, &mut bytes).ok()?;
        Some(bytes)
    }

    fn remember(&mut self, frame: &[u8]) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(frame.to_vec());
    }

    /// One step of traffic: maybe writes something to `socket`; a scanner dropped
    /// mid-frame marks the socket hung up (it closes once its bytes are read).
    pub fn produce(&mut self, socket: &mut Socket) {
        if self.quota == 0 || self.stalled || socket.hung_up || socket.room() < 2 * FRAME_BYTES_MAX
        {
            return;
        }
        if self.rng.u32(0..1000) >= self.rate_per_mille {
            return;
        }
        let kind = self.rng.u32(0..100);
        let bad = self.garbage_enabled && !self.clean;
        match kind {
            0..=79 => {
                if let Some(frame) = self.encode_scan() {
                    socket.write(&frame);
                    self.remember(&frame);
                    self.emitted_valid += 1;
                    self.quota -= 1;
                }
            }
            80..=84 => {
                let index = self.rng.usize(0..RECENT_MAX);
                if let Some(frame) = self.recent.get(index) {
                    socket.write(frame);
                    self.emitted_valid += 1;
                }
            }
            85..=87 if self.text => {}
            85..=87 => {
                self.heartbeat_sequence = self.heartbeat_sequence.wrapping_add(1);
                let frame = Frame::Heartbeat(Heartbeat {
                    scanner_id: self.scanner_id,
                    sequence: self.heartbeat_sequence,
                    sent_at_us: 0,
                });
                self.scratch.clear();
                if wire::encode(&frame, &mut self.scratch).is_ok() {
                    socket.write(&self.scratch);
                }
            }
            _ if self.clean => {}
            88..=90 => {
                let length = self.rng.usize(1..=300);
                let mut garbage: Vec<u8> = (0..length).map(|_| self.rng.u8(..)).collect();
                if self.rng.bool() {
                    // Plant frame-looking starts so the decoder must resynchronise.
                    for _ in 0..self.rng.usize(1..4) {
                        let at = self.rng.usize(0..length);
                        let start: &[u8] = if self.text {
                            &[STX]
                        } else {
                            &[MAGIC[0], MAGIC[1], 1, 3]
                        };
                        for (offset, byte) in start.iter().copied().enumerate() {
                            if let Some(slot) = garbage.get_mut(at + offset) {
                                *slot = byte;
                            }
                        }
                    }
                }
                if bad {
                    socket.write(&garbage);
                }
            }
            91..=93 => {
                // A scan with one bit flipped: its CRC fails.
                if let Some(mut frame) = self.encode_scan() {
                    let at = self.rng.usize(0..frame.len());
                    let bit = self.rng.u32(0..8);
                    if let Some(byte) = frame.get_mut(at) {
                        *byte ^= 1 << bit;
                    }
                    if bad {
                        socket.write(&frame);
                    }
                }
            }
            94..=95 if self.text => {
                // A telegram that never ends: longer than the profile allows.
                let mut endless = vec![STX];
                endless.resize(1 + self.rng.usize(100..=1500), b'7');
                if bad {
                    socket.write(&endless);
                }
            }
            94..=95 => {
                // Headers that lie: too long, unknown type, wrong version, reserved set.
                let header: [u8; 8] = match self.rng.u32(0..4) {
                    0 => [MAGIC[0], MAGIC[1], 1, 3, 0xFF, 0xFF, 0, 0],
                    1 => [MAGIC[0], MAGIC[1], 1, 0x7E, 64, 0, 0, 0],
                    2 => [MAGIC[0], MAGIC[1], 9, 3, 64, 0, 0, 0],
                    _ => [MAGIC[0], MAGIC[1], 1, 3, 64, 0, 1, 0],
                };
                if bad {
                    socket.write(&header);
                }
            }
            96..=97 => {
                // Part of a scan, then hang up (dropped mid-frame).
                if let Some(frame) = self.encode_scan() {
                    let keep = self.rng.usize(1..frame.len());
                    if bad {
                        socket.write(frame.get(..keep).unwrap_or_default());
                        socket.hung_up = true;
                    }
                }
            }
            _ => {
                // Part of a scan, then silence (slowloris).
                if let Some(frame) = self.encode_scan() {
                    let keep = self.rng.usize(1..frame.len());
                    if bad {
                        socket.write(frame.get(..keep).unwrap_or_default());
                        self.stalled = true;
                    }
                }
            }
        }
    }
}
