//! Deterministic tests of the PLC link: a `HostLink` and a `PlcPeer` joined by an
//! in-memory transport on a virtual clock.

use std::time::Duration;

use crate::common::{HOUR, Pair, host_config, plc_config, sort};
use sortd::plc::{
    ChuteState, ChuteStateTable, HostEvent, HostLink, LinkConfig, LinkDownReason, LinkState,
    Outcome, PeerEvent, PeerState, SortConfirm, Telegram, WindowFull,
};

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Submit parcels `ids` and return the sequence numbers of those numbered at once (all
/// of them while the link is up; none while it is down, when they are held).
fn submit_all(pair: &mut Pair, ids: std::ops::Range<u64>) -> Vec<u32> {
    ids.filter_map(|id| {
        pair.host
            .submit(sort(id), pair.now + HOUR)
            .expect("window has room")
    })
    .collect()
}

/// SORTs the host reported acknowledged, summed over its events.
fn acked_total(pair: &Pair) -> u64 {
    pair.host_events
        .iter()
        .map(|event| match event {
            HostEvent::SortsAcked { count, .. } => u64::from(*count),
            _ => 0,
        })
        .sum()
}

#[test]
fn every_sort_is_delivered_once_in_order_and_acked() {
    let mut pair = Pair::established();
    let seqs = submit_all(&mut pair, 0..100);
    assert_eq!(seqs, (1..=100).collect::<Vec<u32>>());
    pair.drive();
    assert_eq!(pair.delivered_seqs(), seqs);
    for (index, (_, command)) in pair.delivered.iter().enumerate() {
        assert_eq!(*command, sort(index as u64));
    }
    assert_eq!(pair.host.unacked(), 0);
    assert_eq!(pair.host.window_free(), 4096);
    let stats = pair.host.stats();
    assert_eq!(
        (stats.sent, stats.acked, stats.retransmitted),
        (100, 100, 0)
    );
    assert_eq!(pair.plc.stats().delivered, 100);
    assert_eq!(acked_total(&pair), 100);
}

#[test]
fn cumulative_ack_frees_the_window_and_full_window_is_backpressure() {
    let host = LinkConfig {
        window_max: 8,
        ..host_config()
    };
    let plc = LinkConfig {
        ack_policy: sortd::plc::AckPolicy {
            every_telegrams: 4,
            delay_ms_max: 50,
        },
        ..plc_config()
    };
    let mut pair = Pair::new(host, plc);
    pair.drive();
    submit_all(&mut pair, 0..8);
    assert_eq!(
        pair.host.submit(sort(8), pair.now + HOUR),
        Err(WindowFull { window_max: 8 })
    );
    assert_eq!(pair.host.window_free(), 0);
    assert_eq!(pair.host.stats().window_full, 1);
    pair.drive();
    // Eight arrived in one read: one cumulative ACK frees the whole window.
    assert_eq!(pair.host.window_free(), 8);
    assert_eq!(pair.plc.stats().acks_sent, 1);
    submit_all(&mut pair, 8..11);
    pair.drive();
    // Three are fewer than four: the ACK waits for its delay.
    assert_eq!(pair.delivered.len(), 11);
    assert_eq!(pair.host.window_free(), 5);
    pair.run_for(ms(49));
    assert_eq!(pair.host.window_free(), 5);
    pair.run_for(ms(1));
    assert_eq!(pair.host.window_free(), 8);
    assert_eq!(pair.plc.stats().acks_sent, 2);
}

#[test]
fn lost_ack_is_retransmitted_and_the_plc_delivers_once() {
    let mut pair = Pair::established();
    submit_all(&mut pair, 0..3);
    let mut to_plc = Vec::new();
    pair.host.poll_transmit(pair.now, &mut to_plc);
    pair.plc.handle_input(pair.now, &to_plc);
    let mut ack = Vec::new();
    pair.plc.poll_transmit(pair.now, &mut ack);
    assert!(!ack.is_empty(), "the PLC acknowledged");
    drop(ack); // lost on the way
    pair.run_for(ms(199));
    assert_eq!(pair.host.stats().retransmitted, 0);
    pair.run_for(ms(1));
    assert_eq!(pair.host.stats().retransmitted, 3);
    assert_eq!(pair.plc.stats().duplicates, 3);
    assert_eq!(pair.host.unacked(), 0);
    // Delivered by the first transmission, never again.
    assert_eq!(pair.delivered_seqs(), vec![1, 2, 3]);
}

#[test]
fn reconnect_resends_only_what_the_plc_lacks() {
    let mut pair = Pair::established();
    submit_all(&mut pair, 0..10);
    let mut to_plc = Vec::new();
    pair.host.poll_transmit(pair.now, &mut to_plc);
    // Only the first six SORTs reach the PLC, then the connection breaks before the
    // PLC's ACK gets back.
    pair.plc.handle_input(pair.now, &to_plc[..6 * 40]);
    let received_before: Vec<u32> = std::iter::from_fn(|| pair.plc.poll_event())
        .filter_map(|event| match event {
            PeerEvent::SortReceived { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(received_before, (1..=6).collect::<Vec<u32>>());
    pair.disconnect();
    assert_eq!(
        pair.host.poll_event(),
        Some(HostEvent::LinkDown {
            why: LinkDownReason::TransportLost
        })
    );
    assert_eq!(pair.host.unacked(), 10);
    // Submissions while down are held, numbered after the resync, and sent.
    assert!(submit_all(&mut pair, 10..12).is_empty());
    assert_eq!(pair.host.held(), 2);
    pair.run_for(ms(200));
    assert_eq!(pair.host.state(), LinkState::Established);
    assert!(pair.host_events.contains(&HostEvent::LinkUp {
        peer_session_changed: false,
        resending: 4
    }));
    assert!(pair.host_events.contains(&HostEvent::HeldReleased {
        sort: sort(11),
        seq: 12
    }));
    assert_eq!(pair.delivered_seqs(), (7..=12).collect::<Vec<u32>>());
    // Seqs 7..=10 went out before, 11 and 12 are new.
    assert_eq!(pair.host.stats().retransmitted, 4);
    assert_eq!(pair.host.stats().sent, 12);
    assert_eq!(pair.plc.stats().duplicates, 0);
    assert_eq!(pair.host.unacked(), 0);
    // Six were acknowledged by the PLC's HELLO, six by ACKs: all twelve reported.
    assert!(pair.host_events.contains(&HostEvent::SortsAcked {
        through_seq: 6,
        count: 6
    }));
    assert_eq!(acked_total(&pair), 12);
}

#[test]
fn heartbeats_every_interval_and_link_down_after_five_missed() {
    let mut pair = Pair::established();
    pair.run_for(ms(10_000));
    assert_eq!(pair.host.stats().heartbeats_sent, 10);
    assert_eq!(pair.plc.stats().heartbeats_sent, 10);
    assert_eq!(pair.host.stats().heartbeats_received, 10);
    // The PLC goes silent (and deaf): everything on the wire is lost from now on.
    pair.faults.drop_percent = 100;
    let silent_from = pair.elapsed_ms();
    let mut down_at = None;
    while down_at.is_none() && pair.elapsed_ms() < 20_000 {
        let next = pair
            .host
            .poll_timeout()
            .expect("timers run while connected");
        pair.now = next;
        pair.host.handle_timeout(pair.now);
        pair.plc.handle_timeout(pair.now);
        pair.drive();
        if pair.host_events.contains(&HostEvent::LinkDown {
            why: LinkDownReason::HeartbeatsMissed,
        }) {
            down_at = Some(pair.elapsed_ms());
        }
    }
    // The last PLC heartbeat arrived at 10 s; five intervals later the link is down.
    assert_eq!(silent_from, 10_000);
    assert_eq!(down_at, Some(15_000));
    assert_eq!(pair.host.stats().heartbeats_sent, 14);
}

#[test]
fn resync_times_out_when_the_plc_never_says_hello() {
    let mut pair = Pair::default_pair();
    pair.reachable = false;
    pair.collect_host_only();
    pair.host.handle_connected(pair.now);
    let mut hello = Vec::new();
    pair.host.poll_transmit(pair.now, &mut hello);
    assert_eq!(hello.len(), 40);
    assert_eq!(pair.host.poll_timeout(), Some(pair.now + ms(5000)));
    pair.now += ms(5000);
    pair.host.handle_timeout(pair.now);
    assert_eq!(
        pair.host.poll_event(),
        Some(HostEvent::LinkDown {
            why: LinkDownReason::ResyncTimedOut
        })
    );
    assert!(matches!(
        pair.host.state(),
        LinkState::AwaitingReconnect { .. }
    ));
}

#[test]
fn reconnect_backoff_grows_caps_and_jitters_within_bounds() {
    for seed in 0..20 {
        let config = LinkConfig {
            jitter_seed: seed,
            ..host_config()
        };
        let mut pair = Pair::new(config, plc_config());
        pair.reachable = false;
        let mut connect_times = Vec::new();
        while connect_times.len() < 10 {
            pair.drive();
            let count = pair
                .host_events
                .iter()
                .filter(|event| **event == HostEvent::ConnectNow)
                .count();
            while connect_times.len() < count {
                connect_times.push(pair.elapsed_ms() as u64);
            }
            let next = pair.host.poll_timeout().expect("backoff timer");
            pair.now = next;
            pair.host.handle_timeout(pair.now);
        }
        let gaps: Vec<u64> = connect_times.windows(2).map(|w| w[1] - w[0]).collect();
        let mut jittered = false;
        for (attempt, gap) in gaps.iter().enumerate() {
            let base = (100u64 << attempt).min(5000);
            assert!(
                *gap >= base / 2 && *gap <= base,
                "seed {seed} attempt {attempt}: {gap} ms outside [{}, {base}]",
                base / 2
            );
            jittered |= *gap != base;
        }
        assert!(jittered, "seed {seed}: no jitter at all");
        // Reaching the PLC resets the backoff.
        pair.reachable = true;
        pair.drive();
        assert_eq!(pair.host.state(), LinkState::Established);
        pair.disconnect();
        let LinkState::AwaitingReconnect { connect_at } = pair.host.state() else {
            panic!("expected a scheduled reconnect");
        };
        assert!(connect_at - pair.now <= ms(100));
    }
}

#[test]
fn duplicate_and_stale_acks_and_confirms_are_counted_and_ignored() {
    let mut pair = Pair::established();
    submit_all(&mut pair, 0..3);
    pair.drive();
    assert_eq!(pair.host.stats().acked, 3);
    let now = pair.now;
    pair.host
        .handle_input(now, &Telegram::Ack { through_seq: 2 }.encode());
    pair.host
        .handle_input(now, &Telegram::Ack { through_seq: 3 }.encode());
    pair.host
        .handle_input(now, &Telegram::Ack { through_seq: 500 }.encode());
    let stats = *pair.host.stats();
    assert_eq!(
        (stats.acks_duplicate, stats.acks_invalid, stats.acked),
        (2, 1, 3)
    );

    let confirm = SortConfirm {
        parcel_id: 1,
        scanner_id: 7,
        chute: 2,
        outcome: Outcome::Diverted,
    };
    let seq = pair.plc.confirm(1, 7, 2, Outcome::Diverted).expect("room");
    assert_eq!(seq, 1000);
    pair.drive();
    let confirmed = |pair: &Pair| {
        pair.host_events
            .iter()
            .filter(|event| matches!(event, HostEvent::SortConfirmed { .. }))
            .count()
    };
    assert_eq!(confirmed(&pair), 1);
    assert!(pair.host_events.contains(&HostEvent::SortConfirmed {
        confirm,
        plc_seq: 1000
    }));
    // The PLC resends the same confirmation (its ACK got lost, say): ignored, re-ACKed.
    let again = Telegram::SortConfirm { seq: 1000, confirm }.encode();
    pair.host.handle_input(now, &again);
    pair.drive();
    assert_eq!(confirmed(&pair), 1);
    assert_eq!(pair.host.stats().duplicates, 1);
    // A confirmation from the future is dropped, not delivered.
    let ahead = Telegram::SortConfirm { seq: 1005, confirm }.encode();
    pair.host.handle_input(now, &ahead);
    pair.drive();
    assert_eq!(confirmed(&pair), 1);
    assert_eq!(pair.host.stats().out_of_order, 1);
    // The PLC side counts stale ACKs too (the host's re-ACK above was one).
    let stale_before = pair.plc.stats().acks_duplicate;
    pair.plc
        .handle_input(now, &Telegram::Ack { through_seq: 999 }.encode());
    assert_eq!(pair.plc.stats().acks_duplicate, stale_before + 1);
}

#[test]
fn confirmations_are_resent_until_the_host_acks_them() {
    let mut pair = Pair::established();
    pair.plc.confirm(5, 7, 9, Outcome::Missed).expect("room");
    let mut lost = Vec::new();
    pair.plc.poll_transmit(pair.now, &mut lost);
    assert_eq!(lost.len(), 40);
    pair.run_for(ms(200));
    assert_eq!(pair.plc.stats().retransmitted, 1);
    assert_eq!(pair.host.stats().delivered, 1);
    assert_eq!(pair.plc.window_free(), 4096);
    assert!(pair.plc_events.contains(&PeerEvent::ReportsAcked {
        through_seq: 1000,
        count: 1
    }));
}

#[test]
fn chute_status_reaches_the_table() {
    let mut pair = Pair::established();
    let table = ChuteStateTable::new();
    pair.plc
        .set_chute_state(12, ChuteState::Full)
        .expect("room");
    pair.plc
        .set_chute_state(13, ChuteState::Disabled)
        .expect("room");
    pair.plc
        .set_chute_state(12, ChuteState::Available)
        .expect("room");
    pair.plc
        .set_chute_state(12, ChuteState::Full)
        .expect("room");
    pair.drive();
    let changes: Vec<(u16, ChuteState)> = pair
        .host_events
        .iter()
        .filter_map(|event| match event {
            HostEvent::ChuteStatusChanged { chute, state } => Some((*chute, *state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (12, ChuteState::Full),
            (13, ChuteState::Disabled),
            (12, ChuteState::Available),
            (12, ChuteState::Full)
        ]
    );
    for (chute, state) in changes {
        table.set(chute, state);
    }
    assert_eq!(table.get(12), ChuteState::Full);
    assert_eq!(table.get(13), ChuteState::Disabled);
    assert_eq!(table.get(14), ChuteState::Available);
}

#[test]
fn garbage_in_either_direction_is_skipped_and_counted() {
    let mut pair = Pair::established();
    let now = pair.now;
    let mut corrupted = Telegram::Ack { through_seq: 0 }.encode();
    corrupted[10] = 0xFF;
    let cases: &[&[u8]] = &[b"\x00\x01garbage\r\n", b"SD", &corrupted, &[0x53; 3]];
    for garbage in cases {
        pair.host.handle_input(now, garbage);
        pair.plc.handle_input(now, garbage);
    }
    submit_all(&mut pair, 0..5);
    pair.plc.confirm(1, 7, 9, Outcome::Diverted).expect("room");
    pair.drive();
    assert_eq!(pair.delivered.len(), 5);
    assert_eq!(pair.host.stats().delivered, 1);
    for stats in [pair.host.stats(), pair.plc.stats()] {
        assert!(stats.telegrams_bad >= 1, "{stats:?}");
        assert!(stats.bytes_skipped >= 40, "{stats:?}");
        assert!(stats.last_decode_error.is_some());
    }
    // A telegram in the wrong direction is valid but unexpected.
    pair.plc.handle_input(
        now,
        &Telegram::SortConfirm {
            seq: 1,
            confirm: SortConfirm {
                parcel_id: 1,
                scanner_id: 1,
                chute: 1,
                outcome: Outcome::Lost,
            },
        }
        .encode(),
    );
    assert_eq!(pair.plc.stats().telegrams_unexpected, 1);
}

#[test]
fn window_full_while_down_then_everything_goes_out_on_connect() {
    let config = LinkConfig {
        window_max: 4,
        ..host_config()
    };
    let mut pair = Pair::new(config, plc_config());
    pair.reachable = false;
    pair.drive();
    submit_all(&mut pair, 0..4);
    assert_eq!(
        pair.host.submit(sort(4), pair.now + HOUR),
        Err(WindowFull { window_max: 4 })
    );
    pair.reachable = true;
    pair.run_for(ms(200));
    assert_eq!(pair.delivered_seqs(), vec![1, 2, 3, 4]);
    assert_eq!(pair.host.window_free(), 4);
}

#[test]
fn sequence_numbers_wrap_around() {
    let config = LinkConfig {
        first_seq: u32::MAX - 2,
        ..host_config()
    };
    let mut pair = Pair::new(config, plc_config());
    pair.drive();
    submit_all(&mut pair, 0..6);
    pair.drive();
    assert_eq!(
        pair.delivered_seqs(),
        vec![u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2]
    );
    assert_eq!(pair.host.unacked(), 0);
}

#[test]
fn a_restarted_host_starts_a_new_numbering_the_plc_accepts() {
    let mut pair = Pair::established();
    submit_all(&mut pair, 0..5);
    pair.drive();
    pair.disconnect();
    // sortd restarts: a new session, numbering from 1 again.
    let restarted = LinkConfig {
        session: 0x0500_0002,
        ..host_config()
    };
    pair.host = HostLink::new(restarted, pair.now);
    pair.host_events.clear();
    submit_all(&mut pair, 100..103);
    pair.drive();
    assert!(pair.plc_events.contains(&PeerEvent::HostUp {
        host_session_changed: true
    }));
    assert_eq!(pair.delivered_seqs(), vec![1, 2, 3, 4, 5, 1, 2, 3]);
    // A restarted PLC is noticed by the host.
    pair.restart_plc(0x0B1C_0002);
    pair.run_for(ms(200));
    assert_eq!(pair.plc.state(), PeerState::Established);
    assert!(pair.host_events.contains(&HostEvent::LinkUp {
        peer_session_changed: true,
        resending: 0
    }));
}

#[test]
fn input_pauses_when_events_are_not_polled_and_resumes_after() {
    let config = LinkConfig {
        events_max: 16,
        ..host_config()
    };
    let mut host = HostLink::new(config, std::time::Instant::now());
    let now = std::time::Instant::now();
    while host.poll_event().is_some() {}
    host.handle_connected(now);
    let hello = sortd::plc::Hello {
        role: sortd::plc::Role::Plc,
        session: 9,
        ack_session: 0,
        acked_through_seq: 0,
        window_first_seq: 1,
        next_seq: 1,
    };
    host.handle_input(now, &Telegram::Hello(hello).encode());
    assert!(matches!(host.poll_event(), Some(HostEvent::LinkUp { .. })));
    let mut stream = Vec::new();
    for seq in 1..=100u32 {
        stream.extend_from_slice(
            &Telegram::ChuteStatus {
                seq,
                chute: seq as u16,
                state: ChuteState::Full,
            }
            .encode(),
        );
    }
    host.handle_input(now, &stream);
    assert_eq!(host.stats().delivered, 16);
    assert_eq!(host.stats().input_bytes_dropped, 0);
    let mut statuses = 0;
    while let Some(event) = host.poll_event() {
        statuses += usize::from(matches!(event, HostEvent::ChuteStatusChanged { .. }));
    }
    assert_eq!(statuses, 100);
    assert_eq!(host.stats().delivered, 100);
}

#[test]
fn a_sort_sent_after_an_idle_gap_is_not_resent_before_its_ack_timeout() {
    // Issue 15, defect 1: the timer ran from the host's last input (the previous ACK),
    // so after an idle gap longer than ack_timeout_ms a lone SORT was resent at once.
    // Heartbeats are slowed so that no other timer is due in the gaps.
    let slow = |config: LinkConfig| LinkConfig {
        heartbeat_interval_ms: 10_000,
        ..config
    };
    let mut pair = Pair::new(slow(host_config()), slow(plc_config()));
    pair.drive();
    for gap_ms in [250, 700, 999] {
        submit_all(&mut pair, 0..1);
        pair.drive();
        assert_eq!(pair.host.unacked(), 0);
        // Idle: the driver calls nothing until a timer is due (heartbeats every 1 s).
        pair.now += ms(gap_ms);
        submit_all(&mut pair, 1..2);
        let mut to_plc = Vec::new();
        pair.host.poll_transmit(pair.now, &mut to_plc);
        assert_eq!(to_plc.len(), 40, "one SORT");
        let timer = pair.host.poll_timeout().expect("a timer runs");
        assert!(timer > pair.now, "gap {gap_ms} ms: a timer already due");
        // Before the ACK is back, the driver runs whatever timer is due a moment later.
        pair.host
            .handle_timeout(pair.now + Duration::from_micros(50));
        let mut again = Vec::new();
        pair.host
            .poll_transmit(pair.now + Duration::from_micros(50), &mut again);
        assert!(again.is_empty(), "gap {gap_ms} ms: resent at once");
        pair.plc.handle_input(pair.now, &to_plc);
        pair.drive();
        assert_eq!(pair.host.unacked(), 0);
        assert_eq!(pair.host.stats().retransmitted, 0, "gap {gap_ms} ms");
        pair.run_for(ms(1));
    }
    assert_eq!(pair.plc.stats().duplicates, 0);
}

#[test]
fn the_retransmit_timer_is_ack_timeout_after_the_send_or_the_last_advancing_ack() {
    let mut pair = Pair::established();
    pair.now += ms(300);
    submit_all(&mut pair, 0..2);
    let sent_at = pair.now;
    let mut to_plc = Vec::new();
    pair.host.poll_transmit(sent_at, &mut to_plc);
    assert_eq!(pair.host.poll_timeout(), Some(sent_at + ms(200)));
    // The PLC acknowledges the first only, 50 ms later: the timer restarts there.
    pair.now += ms(50);
    pair.plc.handle_input(pair.now, &to_plc[..40]);
    let mut ack = Vec::new();
    pair.plc.poll_transmit(pair.now, &mut ack);
    pair.host.handle_input(pair.now, &ack);
    assert_eq!(pair.host.unacked(), 1);
    assert_eq!(pair.host.poll_timeout(), Some(pair.now + ms(200)));
    // Nothing more: at that moment exactly the one unacknowledged SORT goes again.
    pair.now += ms(199);
    pair.host.handle_timeout(pair.now);
    let mut nothing = Vec::new();
    pair.host.poll_transmit(pair.now, &mut nothing);
    assert!(nothing.is_empty());
    pair.now += ms(1);
    pair.host.handle_timeout(pair.now);
    let mut resent = Vec::new();
    pair.host.poll_transmit(pair.now, &mut resent);
    assert_eq!(resent, to_plc[40..].to_vec());
    assert_eq!(pair.host.stats().retransmitted, 1);
}

fn expired(pair: &Pair) -> Vec<u64> {
    pair.host_events
        .iter()
        .filter_map(|event| match event {
            HostEvent::HeldExpired { sort } => Some(sort.parcel_id),
            _ => None,
        })
        .collect()
}

#[test]
fn sorts_decided_while_down_are_held_until_the_resync_or_their_deadline() {
    // Issue 15, defect 2: parcels decided during a short drop are held, not lost; those
    // whose deadline passes are reported, and never take a sequence number.
    let config = LinkConfig {
        window_max: 6,
        ..host_config()
    };
    let mut pair = Pair::new(config, plc_config());
    pair.drive();
    submit_all(&mut pair, 0..2);
    let mut lost = Vec::new();
    pair.host.poll_transmit(pair.now, &mut lost); // seqs 1 and 2, never arrive
    pair.reachable = false;
    pair.disconnect();
    let down_at = pair.now;
    let deadlines_ms = [(10, 100), (11, 5_000), (12, 50), (13, 5_000)];
    for (parcel, deadline_ms) in deadlines_ms {
        let deadline = down_at + ms(deadline_ms);
        assert_eq!(pair.host.submit(sort(parcel), deadline), Ok(None));
    }
    // Two numbered and four held fill the window of six.
    assert_eq!(pair.host.window_free(), 0);
    assert_eq!((pair.host.held(), pair.host.stats().held), (4, 4));
    assert_eq!(
        pair.host.submit(sort(14), down_at + HOUR),
        Err(WindowFull { window_max: 6 })
    );
    pair.run_until(down_at + ms(49));
    assert!(expired(&pair).is_empty());
    pair.run_until(down_at + ms(50));
    assert_eq!(expired(&pair), vec![12]);
    pair.run_until(down_at + ms(100));
    assert_eq!(expired(&pair), vec![12, 10]);
    assert_eq!(pair.host.held(), 2);
    assert_eq!(pair.host.window_free(), 2);
    assert_eq!(pair.host.stats().held_expired, 2);
    // The PLC comes back: the two numbered go again, then the two held get 3 and 4.
    pair.reachable = true;
    pair.run_for(ms(5_000));
    assert_eq!(pair.host.state(), LinkState::Established);
    let released: Vec<(u64, u32)> = pair
        .host_events
        .iter()
        .filter_map(|event| match event {
            HostEvent::HeldReleased { sort, seq } => Some((sort.parcel_id, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(released, vec![(11, 3), (13, 4)]);
    let delivered: Vec<(u32, u64)> = pair
        .delivered
        .iter()
        .map(|(seq, sort)| (*seq, sort.parcel_id))
        .collect();
    assert_eq!(delivered, vec![(1, 0), (2, 1), (3, 11), (4, 13)]);
    assert_eq!(pair.host.unacked(), 0);
    assert_eq!(pair.host.held(), 0);
    assert_eq!(pair.plc.stats().out_of_order, 0);
}

#[test]
fn a_held_sort_whose_deadline_passes_during_the_resync_is_not_numbered() {
    let mut pair = Pair::default_pair();
    pair.reachable = false;
    pair.drive();
    assert_eq!(pair.host.submit(sort(1), pair.now + ms(300)), Ok(None));
    assert_eq!(pair.host.submit(sort(2), pair.now + HOUR), Ok(None));
    // The transport comes up at 299 ms, the PLC's HELLO only at 301 ms.
    pair.now += ms(299);
    pair.collect_host_only();
    pair.host.handle_connected(pair.now);
    pair.plc.handle_connected(pair.now);
    let mut hello = Vec::new();
    pair.host.poll_transmit(pair.now, &mut hello);
    pair.plc.handle_input(pair.now, &hello);
    let mut plc_hello = Vec::new();
    pair.plc.poll_transmit(pair.now, &mut plc_hello);
    pair.now += ms(2);
    pair.host.handle_input(pair.now, &plc_hello);
    pair.connected = true;
    pair.drive();
    assert_eq!(expired(&pair), vec![1]);
    assert_eq!(pair.delivered_seqs(), vec![1]);
    assert_eq!(pair.delivered[0].1, sort(2));
}

#[test]
fn abandoning_expires_every_held_sort() {
    let mut pair = Pair::default_pair();
    pair.reachable = false;
    pair.drive();
    for parcel in 0..3 {
        assert_eq!(pair.host.submit(sort(parcel), pair.now + HOUR), Ok(None));
    }
    pair.host.abandon_held();
    pair.collect_host_only();
    assert_eq!(expired(&pair), vec![0, 1, 2]);
    assert_eq!(pair.host.held(), 0);
    assert_eq!(pair.host.window_free(), 4096);
}

/// Chute states the host learned, from its events, in order.
fn chute_reports(pair: &Pair) -> Vec<(u16, ChuteState)> {
    pair.host_events
        .iter()
        .filter_map(|event| match event {
            HostEvent::ChuteStatusChanged { chute, state } => Some((*chute, *state)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restarted_host_learns_every_chute_that_is_not_available() {
    // Issue 15, defect 3: a chute marked full before sortd restarted was forgotten.
    let mut pair = Pair::established();
    for (chute, state) in [
        (12, ChuteState::Full),
        (7, ChuteState::Disabled),
        (30, ChuteState::Full),
        (30, ChuteState::Available),
        (5, ChuteState::Full),
    ] {
        pair.plc.set_chute_state(chute, state).expect("room");
    }
    pair.drive();
    assert_eq!(chute_reports(&pair).len(), 5);
    // The same host reconnecting needs nothing again.
    pair.disconnect();
    pair.host_events.clear();
    pair.run_for(ms(500));
    assert_eq!(pair.host.state(), LinkState::Established);
    assert!(chute_reports(&pair).is_empty());
    // sortd restarts: the PLC announces the three chutes that are not available.
    pair.disconnect();
    pair.host = HostLink::new(
        LinkConfig {
            session: 0x0500_0002,
            ..host_config()
        },
        pair.now,
    );
    pair.host_events.clear();
    pair.drive();
    assert_eq!(
        chute_reports(&pair),
        vec![
            (5, ChuteState::Full),
            (7, ChuteState::Disabled),
            (12, ChuteState::Full)
        ]
    );
    let table = ChuteStateTable::new();
    for (chute, state) in chute_reports(&pair) {
        table.set(chute, state);
    }
    assert!(!table.is_available(12));
    assert!(table.is_available(30));
    assert_eq!(pair.plc.chutes_unavailable().count(), 3);
}

#[test]
fn a_restarted_plc_announces_the_chute_states_it_powers_on_with() {
    let mut pair = Pair::established();
    for (chute, state) in [(12, ChuteState::Full), (7, ChuteState::Disabled)] {
        pair.plc.set_chute_state(chute, state).expect("room");
    }
    pair.drive();
    assert_eq!(chute_reports(&pair).len(), 2);
    // A power cycle (the simulator's PlcModel::restart): a new PLC session that forgot
    // the link, but not the chutes (the bin is still full, the chute still disabled).
    let kept: Vec<_> = pair.plc.chutes_unavailable().collect();
    pair.restart_plc(0x0B1C_0002);
    pair.plc.remember_chute_states(kept);
    pair.host_events.clear();
    pair.run_for(ms(500));
    assert_eq!(pair.host.state(), LinkState::Established);
    assert!(
        pair.host_events.iter().any(|event| matches!(
            event,
            HostEvent::LinkUp {
                peer_session_changed: true,
                ..
            }
        )),
        "{:?}",
        pair.host_events
    );
    // The host (which marks every chute available on a new PLC session) learns both again.
    assert_eq!(
        chute_reports(&pair),
        vec![(7, ChuteState::Disabled), (12, ChuteState::Full)]
    );
}

#[test]
fn announcements_wait_for_window_room_and_skip_chutes_available_again() {
    let plc = LinkConfig {
        window_max: 2,
        ..plc_config()
    };
    let mut pair = Pair::new(host_config(), plc);
    pair.drive();
    for (chute, state) in [
        (1, ChuteState::Full),
        (2, ChuteState::Full),
        (3, ChuteState::Full),
        (4, ChuteState::Disabled),
        (2, ChuteState::Available),
    ] {
        pair.plc.set_chute_state(chute, state).expect("room");
        pair.drive();
    }
    pair.disconnect();
    pair.host = HostLink::new(
        LinkConfig {
            session: 0x0500_0002,
            ..host_config()
        },
        pair.now,
    );
    pair.host_events.clear();
    pair.run_for(ms(100));
    // Three announcements through a window of two.
    assert_eq!(
        chute_reports(&pair),
        vec![
            (1, ChuteState::Full),
            (3, ChuteState::Full),
            (4, ChuteState::Disabled)
        ]
    );
}

#[test]
fn at_a_thousand_parcels_a_second_every_sort_leaves_at_once_and_nothing_is_resent() {
    // Issue 15, latency: nothing in the link may hold a SORT back for a timer, and a
    // healthy line shows no retransmissions. Driven as the daemon drives the link:
    // timers only when due, bytes out right after each submit, the ACK 300 µs later.
    let mut pair = Pair::established();
    let mut rng = fastrand::Rng::with_seed(15);
    let (mut late_sends, mut heartbeats_sent) = (0, 0);
    for parcel in 0..10_000u64 {
        // About 1,000 per second, with bursts and gaps up to 1.5 s now and then.
        let gap_us = match rng.u32(0..1000) {
            0 => rng.u64(250_000..1_500_000),
            1..=100 => 0,
            _ => rng.u64(500..1_500),
        };
        pair.now += Duration::from_micros(gap_us);
        if pair.host.poll_timeout().is_some_and(|at| at <= pair.now) {
            pair.host.handle_timeout(pair.now);
        }
        pair.host
            .submit(sort(parcel), pair.now + HOUR)
            .expect("room")
            .expect("the link is up");
        let mut out = Vec::new();
        pair.host.poll_transmit(pair.now, &mut out);
        let sorts_out = out
            .chunks(40)
            .filter(|telegram| matches!(Telegram::decode(telegram), Ok(Telegram::Sort { .. })))
            .count();
        if sorts_out != 1 {
            late_sends += 1;
        }
        heartbeats_sent += out.len() / 40 - sorts_out;
        pair.now += Duration::from_micros(300);
        pair.plc.handle_input(pair.now, &out);
        if pair.plc.poll_timeout().is_some_and(|at| at <= pair.now) {
            pair.plc.handle_timeout(pair.now);
        }
        while pair.plc.poll_event().is_some() {}
        let mut back = Vec::new();
        pair.plc.poll_transmit(pair.now, &mut back);
        pair.host.handle_input(pair.now, &back);
        while pair.host.poll_event().is_some() {}
    }
    assert_eq!(late_sends, 0);
    assert_eq!(pair.host.stats().retransmitted, 0);
    assert_eq!(pair.plc.stats().duplicates, 0);
    assert_eq!(pair.host.unacked(), 0);
    // Heartbeats: about one a second, never a burst.
    assert!(heartbeats_sent as u128 <= pair.elapsed_ms() / 1000 + 1);
}

#[test]
fn a_first_hello_says_it_never_heard_from_the_other_side() {
    // PROTOCOL.md: ack_session 0 means "never heard from you"; acked_through_seq is
    // then meaningless and sortd sends 0xFFFFFFFF.
    let mut pair = Pair::default_pair();
    pair.collect_host_only();
    pair.host.handle_connected(pair.now);
    let mut hello = Vec::new();
    pair.host.poll_transmit(pair.now, &mut hello);
    match Telegram::decode(&hello) {
        Ok(Telegram::Hello(hello)) => {
            assert_eq!((hello.ack_session, hello.acked_through_seq), (0, u32::MAX));
            assert_eq!((hello.window_first_seq, hello.next_seq), (1, 1));
        }
        other => panic!("not a HELLO: {other:?}"),
    }
}
