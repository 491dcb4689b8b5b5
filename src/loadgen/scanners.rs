//! The load generator's scanners: N TCP connections fed from one pacing thread, open loop
//! at a target rate (every parcel has an intended send time, kept even when the socket
//! pushes back, so a stall shows up as latency instead of vanishing) or closed loop as
//! fast as the sockets take bytes.
//!
//! It encodes and sends; it does not measure arrivals (see [`SendTimes`] and the PLC
//! simulator's observer) and does not judge the run (see `report`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::wire::{self, Barcodes, Frame, Hello, ScanFlags, ScanFrame, TextProfile};

use super::mix::{ParcelDraft, ParcelKind, ParcelMix};
use super::text::encode_text;

/// Parcels whose send time is remembered (a power of two): far more than are ever in
/// flight at once.
const SEND_TIMES_SLOTS: usize = 1 << 22;
/// Bytes a connection may have queued before the pacer stops encoding for it.
const PENDING_BYTES_MAX: usize = 1 << 20;
/// Drafts generated per connection up front and cycled, so drawing parcels costs nothing
/// during the run.
const DRAFTS_PER_CONNECTION: usize = 4096;

/// When each parcel was meant to be sent, by parcel id, for latency measurement.
#[derive(Debug)]
pub struct SendTimes {
    start: Instant,
    nanos: Box<[AtomicU64]>,
}

impl SendTimes {
    /// Times measured from `start`.
    pub fn new(start: Instant) -> SendTimes {
        SendTimes {
            start,
            nanos: (0..SEND_TIMES_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, parcel_id: u64) -> Option<&AtomicU64> {
        self.nanos
            .get((parcel_id as usize) & (SEND_TIMES_SLOTS - 1))
    }

    fn record(&self, parcel_id: u64, intended: Instant) {
        if let Some(slot) = self.slot(parcel_id) {
            let nanos = intended.saturating_duration_since(self.start).as_nanos() as u64;
            slot.store(nanos, Ordering::Relaxed);
        }
    }

    /// When `parcel_id` was meant to be sent.
    pub fn intended(&self, parcel_id: u64) -> Option<Instant> {
        self.slot(parcel_id)
            .map(|slot| self.start + Duration::from_nanos(slot.load(Ordering::Relaxed)))
    }
}

/// How the scanners behave.
#[derive(Debug, Clone)]
pub struct ScannerOptions {
    /// sortd's scanner listener.
    pub target: SocketAddr,
    /// Connections (scanners).
    pub connections: usize,
    /// Frames per write: 1 is one parcel per send like a real scanner, 16 or more a
    /// coalescing gateway.
    pub frames_per_write: usize,
    /// Parcels per second in total, evenly paced; `None` sends as fast as possible.
    pub rate_per_s: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many parcels.
    pub count: Option<u64>,
    /// First scanner id; connection `c` is scanner `scanner_id_base + c`.
    pub scanner_id_base: u32,
    /// `None`: sortd's binary protocol (a HELLO, then SCAN frames). A text profile: its
    /// telegrams, no HELLO (the target must be a listener of that profile).
    pub profile: Option<TextProfile>,
    /// Open loop: how the pacer waits for the next parcel's time.
    pub pacing: Pacing,
}

/// How the open-loop pacer waits when it is ahead of its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Sleep until the next parcel is due, then send every parcel due by then. At high
    /// rates the timer's granularity (tens of microseconds) groups parcels, which shows
    /// up as send lateness; the pacer leaves the CPU to the daemon and the PLC side.
    #[default]
    Sleep,
    /// Spin through waits shorter than 200 us (sleep through longer ones): sends on
    /// time while it has a core of its own, but on a machine without a spare core it
    /// takes one from the daemon and the PLC side (the behaviour before 2026-11-26).
    Spin,
}

impl Pacing {
    /// The pacing named `name` (`sleep`, `spin`).
    pub fn from_name(name: &str) -> Option<Pacing> {
        match name {
            "sleep" => Some(Pacing::Sleep),
            "spin" => Some(Pacing::Spin),
            _ => None,
        }
    }
}

/// What the scanners did, live.
#[derive(Debug, Default)]
pub struct ScannerCounters {
    /// Frames sent (queued on a socket), duplicates included.
    pub sent: AtomicU64,
    /// Sent by parcel kind, indexed as [`ParcelKind::ALL`].
    pub sent_by_kind: [AtomicU64; 6],
    /// Connection failures and write errors.
    pub errors: AtomicU64,
    /// Set when the last parcel has been written.
    pub finished: AtomicBool,
    /// Open loop: each parcel's send lateness in microseconds, from its intended send
    /// time to the return of the write that carried it (merged once, at the end).
    pub send_lateness_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

struct Scanner {
    stream: TcpStream,
    scanner_id: u32,
    profile: Option<TextProfile>,
    pending: Vec<u8>,
    pending_sent: usize,
    drafts: Vec<(ParcelKind, ParcelDraft)>,
    next_draft: usize,
    last_parcel_id: u64,
    alive: bool,
}

impl Scanner {
    fn connect(
        address: SocketAddr,
        scanner_id: u32,
        profile: Option<TextProfile>,
        drafts: Vec<(ParcelKind, ParcelDraft)>,
    ) -> io::Result<Scanner> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let text = profile.is_some();
        let mut scanner = Scanner {
            stream,
            scanner_id,
            profile,
            pending: Vec::with_capacity(64 * 1024),
            pending_sent: 0,
            drafts,
            next_draft: 0,
            last_parcel_id: 0,
            alive: true,
        };
        if text {
            // A text scanner says nothing before its first telegram.
            scanner.stream.set_nonblocking(true)?;
            return Ok(scanner);
        }
        let hello = Frame::Hello(Hello {
            scanner_id,
            protocol_version: wire::PROTOCOL_VERSION,
            heartbeat_interval_ms: 0,
            sent_at_us: unix_micros(),
        });
        wire::encode(&hello, &mut scanner.pending)
            .map_err(|error| io::Error::other(format!("{error:?}")))?;
        scanner.flush_blocking()?;
        scanner.stream.set_nonblocking(true)?;
        Ok(scanner)
    }

    fn flush_blocking(&mut self) -> io::Result<()> {
        let pending = self.pending.get(self.pending_sent..).unwrap_or_default();
        self.stream.write_all(pending)?;
        self.pending.clear();
        self.pending_sent = 0;
        Ok(())
    }

    fn pending_bytes(&self) -> usize {
        self.pending.len() - self.pending_sent
    }

    /// Encodes one parcel; returns its kind and id.
    fn encode_next(&mut self, fresh_parcel_id: u64, now_us: u64) -> (ParcelKind, u64) {
        let Some((kind, draft)) = self.drafts.get(self.next_draft) else {
            return (ParcelKind::NoRead, fresh_parcel_id);
        };
        self.next_draft = (self.next_draft + 1) % self.drafts.len().max(1);
        let parcel_id = if *kind == ParcelKind::Duplicate && self.last_parcel_id != 0 {
            self.last_parcel_id
        } else {
            fresh_parcel_id
        };
        let mut codes: [&[u8]; wire::BARCODES_MAX] = [&[]; wire::BARCODES_MAX];
        let code_count = draft.barcodes.len().min(wire::BARCODES_MAX);
        for (slot, code) in codes.iter_mut().zip(&draft.barcodes) {
            *slot = code.as_slice();
        }
        let scan = ScanFrame {
            scanner_id: self.scanner_id,
            sequence: parcel_id as u32,
            parcel_id,
            scanned_at_us: now_us,
            barcodes: Barcodes::from_slice(codes.get(..code_count).unwrap_or_default())
                .unwrap_or_default(),
            destination: draft.destination.as_deref(),
            weight_g: draft.weight_g,
            length_mm: draft.dimensions_mm[0],
            width_mm: draft.dimensions_mm[1],
            height_mm: draft.dimensions_mm[2],
            flags: ScanFlags::default(),
        };
        // Drafts come from the plan and respect the frame limits; an encode error would
        // be a bug in the mix (or a plan code a text profile cannot carry), and the
        // parcel is then simply not sent: the run reports it missing.
        let _ = match &self.profile {
            Some(profile) => encode_text(profile, &scan, &mut self.pending).is_ok(),
            None => wire::encode(&Frame::Scan(scan), &mut self.pending).is_ok(),
        };
        self.last_parcel_id = parcel_id;
        (*kind, parcel_id)
    }

    /// Writes what the socket takes now. False when the connection failed.
    fn flush(&mut self) -> bool {
        while self.pending_sent < self.pending.len() {
            let pending = self.pending.get(self.pending_sent..).unwrap_or_default();
            match self.stream.write(pending) {
                Ok(0) => return false,
                Ok(count) => self.pending_sent += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if self.pending_sent == self.pending.len() {
            self.pending.clear();
            self.pending_sent = 0;
        }
        true
    }
}

/// Connects every scanner, then paces parcels until the count or duration is reached or
/// `stop` is set. Parcel ids are unique across scanners and start at 1; each parcel's
/// intended send time goes into `send_times` before it is written.
pub fn run_scanners(
    options: &ScannerOptions,
    mix: &ParcelMix,
    seed: u64,
    send_times: &SendTimes,
    counters: &ScannerCounters,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut scanners = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        let mut fork = mix.fork(
            seed.wrapping_add(index as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let drafts = (0..DRAFTS_PER_CONNECTION).map(|_| fork.draw()).collect();
        let scanner_id = options.scanner_id_base.wrapping_add(index as u32);
        scanners.push(Scanner::connect(
            options.target,
            scanner_id,
            options.profile.clone(),
            drafts,
        )?);
    }
    let frames_per_write = options.frames_per_write.max(1) as u64;
    let start = Instant::now();
    let epoch_us = unix_micros();
    let mut parcels_sent: u64 = 0;
    let mut next_scanner = 0usize;
    let mut kinds = [0u64; 6];
    let limit = options.count.unwrap_or(u64::MAX);
    let mut lateness_us = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    loop {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let out_of_time = options.duration.is_some_and(|duration| elapsed >= duration);
        if stop.load(Ordering::Acquire) || out_of_time || parcels_sent >= limit {
            break;
        }
        // How many parcels are due by now.
        let due = match options.rate_per_s {
            Some(rate) => {
                let due = (elapsed.as_nanos() * u128::from(rate) / 1_000_000_000) as u64 + 1;
                due.min(limit)
            }
            None => (parcels_sent + frames_per_write * scanners.len() as u64).min(limit),
        };
        let mut progressed = false;
        let mut blocked_all = 0usize;
        while parcels_sent < due && blocked_all < scanners.len() {
            let Some(scanner) = scanners.get_mut(next_scanner) else {
                next_scanner = 0;
                continue;
            };
            next_scanner = (next_scanner + 1) % options.connections.max(1);
            if !scanner.alive || scanner.pending_bytes() >= PENDING_BYTES_MAX {
                blocked_all += 1;
                continue;
            }
            blocked_all = 0;
            let group = frames_per_write.min(due - parcels_sent).max(1);
            let group_first = parcels_sent;
            for _ in 0..group {
                let fresh_id = parcels_sent + 1;
                let intended = match options.rate_per_s {
                    Some(rate) => {
                        start + Duration::from_nanos(parcels_sent * 1_000_000_000 / rate.max(1))
                    }
                    None => now,
                };
                let now_us =
                    epoch_us + intended.saturating_duration_since(start).as_micros() as u64;
                let (kind, parcel_id) = scanner.encode_next(fresh_id, now_us);
                if parcel_id == fresh_id {
                    send_times.record(parcel_id, intended);
                }
                if let Some(count) =
                    kinds.get_mut(ParcelKind::ALL.iter().position(|k| *k == kind).unwrap_or(0))
                {
                    *count += 1;
                }
                parcels_sent += 1;
            }
            if !scanner.flush() {
                scanner.alive = false;
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            if let (Some(rate), Some(lateness)) = (options.rate_per_s, lateness_us.as_mut()) {
                let written = Instant::now();
                for parcel in group_first..parcels_sent {
                    let intended =
                        start + Duration::from_nanos(parcel * 1_000_000_000 / rate.max(1));
                    let late_us = written.saturating_duration_since(intended).as_micros() as u64;
                    let _ = lateness.record(late_us.max(1));
                }
            }
            progressed = true;
        }
        for scanner in scanners
            .iter_mut()
            .filter(|s| s.alive && s.pending_bytes() > 0)
        {
            if !scanner.flush() {
                scanner.alive = false;
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.sent.store(parcels_sent, Ordering::Relaxed);
        for (slot, count) in counters.sent_by_kind.iter().zip(kinds) {
            slot.store(count, Ordering::Relaxed);
        }
        if scanners.iter().all(|scanner| !scanner.alive) {
            return Err(io::Error::other("every scanner connection failed"));
        }
        if !progressed {
            // Open loop ahead of schedule: wait for the next parcel's time.
            match options.rate_per_s {
                Some(rate) => {
                    let next_at =
                        start + Duration::from_nanos(parcels_sent * 1_000_000_000 / rate.max(1));
                    let wait = next_at.saturating_duration_since(Instant::now());
                    match options.pacing {
                        Pacing::Sleep => std::thread::sleep(wait),
                        Pacing::Spin if wait > Duration::from_micros(200) => {
                            std::thread::sleep(wait - Duration::from_micros(100));
                        }
                        Pacing::Spin => std::hint::spin_loop(),
                    }
                }
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    }
    // Let every queued byte out.
    let flush_deadline = Instant::now() + Duration::from_secs(10);
    while scanners.iter().any(|s| s.alive && s.pending_bytes() > 0)
        && Instant::now() < flush_deadline
    {
        for scanner in scanners.iter_mut().filter(|s| s.alive) {
            if !scanner.flush() {
                scanner.alive = false;
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    counters.sent.store(parcels_sent, Ordering::Relaxed);
    if let (Some(lateness), Ok(mut shared)) = (lateness_us, counters.send_lateness_us.lock()) {
        *shared = Some(lateness);
    }
    counters.finished.store(true, Ordering::Release);
    Ok(())
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}
