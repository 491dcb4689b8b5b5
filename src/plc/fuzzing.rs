//! Entry points for the `plc_telegram_decode` fuzz target and its corpus replay test.
//!
//! Arbitrary bytes go to the fixed-size decoder (a telegram that decodes must re-encode
//! to the same 40 bytes) and, chunked by the input itself, into an established
//! [`HostLink`] and an established [`PlcPeer`]; whatever they send back must be valid
//! telegrams. The oracles are assertions: a panic here is a finding. The caller passes
//! the time base so this module reads no clock either.

use std::time::{Duration, Instant};

use super::config::LinkConfig;
use super::host::{HostLink, LinkState};
use super::peer::{PeerState, PlcPeer};
use super::telegram::{Hello, Role, TELEGRAM_BYTES, Telegram};

/// Bound on the bytes one run processes, so a huge input cannot make a slow run.
pub const FUZZ_INPUT_BYTES_MAX: usize = 64 * 1024;

/// Run every oracle over `data`.
pub fn telegram_decode(now: Instant, data: &[u8]) {
    let data = data.get(..FUZZ_INPUT_BYTES_MAX).unwrap_or(data);
    round_trip(data);
    drive_host(now, data);
    drive_peer(now, data);
}

fn round_trip(data: &[u8]) {
    if let Ok(telegram) = Telegram::decode(data) {
        let encoded = telegram.encode();
        assert_eq!(Some(&encoded[..]), data.get(..TELEGRAM_BYTES));
        assert_eq!(Telegram::decode(&encoded), Ok(telegram));
    }
}

fn config() -> LinkConfig {
    LinkConfig {
        window_max: 16,
        events_max: 16,
        receive_buffer_bytes_max: 4 * TELEGRAM_BYTES,
        session: 0xF022,
        ..LinkConfig::default()
    }
}

fn hello(role: Role, session: u64) -> Vec<u8> {
    Telegram::Hello(Hello {
        role,
        session,
        ack_session: 0,
        acked_through_seq: 0,
        window_first_seq: 1,
        next_seq: 1,
    })
    .encode()
    .to_vec()
}

/// Split `data` into chunks whose sizes come from the data itself.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let step = usize::from(data.first().copied().unwrap_or(1) % 61) + 1;
    data.chunks(step)
}

fn check_output(out: &[u8]) {
    assert_eq!(out.len() % TELEGRAM_BYTES, 0);
    for block in out.chunks(TELEGRAM_BYTES) {
        assert!(Telegram::decode(block).is_ok());
    }
}

fn drive_host(now: Instant, data: &[u8]) {
    let mut link = HostLink::new(config(), now);
    link.handle_connected(now);
    link.handle_input(now, &hello(Role::Plc, 7));
    assert_eq!(link.state(), LinkState::Established);
    for sort_index in 0..4u64 {
        let _ = link.submit(
            super::SortCommand {
                parcel_id: sort_index,
                scanner_id: 1,
                chute: 1,
                reason: crate::decision::Reason::SortedPrimary,
                plan_version: 1,
                decided_at_us: 0,
            },
            now + Duration::from_secs(3600),
        );
    }
    let mut out = Vec::new();
    let mut time = now;
    for chunk in chunks(data) {
        link.handle_input(time, chunk);
        while link.poll_event().is_some() {}
        time += Duration::from_millis(u64::from(chunk.first().copied().unwrap_or(0)));
        link.handle_timeout(time);
        link.poll_transmit(time, &mut out);
        check_output(&out);
        out.clear();
        assert!(link.window_free() <= 16);
    }
}

fn drive_peer(now: Instant, data: &[u8]) {
    let mut peer = PlcPeer::new(config(), now);
    peer.handle_connected(now);
    peer.handle_input(now, &hello(Role::Host, 9));
    assert_eq!(peer.state(), PeerState::Established);
    let _ = peer.confirm(1, 1, 1, super::Outcome::Diverted);
    let mut out = Vec::new();
    let mut time = now;
    for chunk in chunks(data) {
        peer.handle_input(time, chunk);
        while peer.poll_event().is_some() {}
        time += Duration::from_millis(u64::from(chunk.last().copied().unwrap_or(0)));
        peer.handle_timeout(time);
        peer.poll_transmit(time, &mut out);
        check_output(&out);
        out.clear();
    }
}
