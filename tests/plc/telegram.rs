//! The PLC telegram codec: golden bytes (the ones PROTOCOL.md shows), round trips and
//! every way a telegram is rejected.

use sortd::decision::Reason;
use sortd::plc::telegram::kind;
use sortd::plc::{
    ChuteState, Hello, Outcome, Role, SortCommand, SortConfirm, TELEGRAM_BYTES, Telegram,
    TelegramDecodeError,
};

/// The examples PROTOCOL.md documents, by title.
fn examples() -> Vec<(&'static str, Telegram)> {
    vec![
        (
            "HELLO, host to PLC",
            Telegram::Hello(Hello {
                role: Role::Host,
                session: 0x0006_1A2B_3C4D_5E6F,
                ack_session: 0x0000_0000_5EED_0001,
                acked_through_seq: 500,
                window_first_seq: 1001,
                next_seq: 1003,
            }),
        ),
        (
            "HELLO, PLC to host",
            Telegram::Hello(Hello {
                role: Role::Plc,
                session: 0x0000_0000_5EED_0001,
                ack_session: 0x0006_1A2B_3C4D_5E6F,
                acked_through_seq: 1001,
                window_first_seq: 501,
                next_seq: 501,
            }),
        ),
        (
            "HEARTBEAT",
            Telegram::Heartbeat {
                counter: 7,
                echo: 6,
            },
        ),
        ("ACK", Telegram::Ack { through_seq: 1002 }),
        (
            "SORT",
            Telegram::Sort {
                seq: 1002,
                sort: SortCommand {
                    parcel_id: 1_234_567_890_123,
                    scanner_id: 17,
                    chute: 42,
                    reason: Reason::SortedAlternate,
                    plan_version: 7,
                    decided_at_us: 1_700_000_000_000_000,
                },
            },
        ),
        (
            "SORT_CONFIRM",
            Telegram::SortConfirm {
                seq: 501,
                confirm: SortConfirm {
                    parcel_id: 1_234_567_890_123,
                    scanner_id: 17,
                    chute: 42,
                    outcome: Outcome::Diverted,
                },
            },
        ),
        (
            "CHUTE_STATUS",
            Telegram::ChuteStatus {
                seq: 502,
                chute: 42,
                state: ChuteState::Full,
            },
        ),
    ]
}

/// Hex dump as PROTOCOL.md prints it: 8 bytes per line, decimal offset first.
fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(8)
        .enumerate()
        .map(|(line, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:02}: {}\n", line * 8, hex.join(" "))
        })
        .collect()
}

fn plc_section() -> String {
    let protocol = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))
        .expect("PROTOCOL.md is readable");
    let start = protocol.find("\n## PLC link").expect("PLC link section");
    let rest = &protocol[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |at| at + 3);
    rest[..end].to_string()
}

/// Every ```hex block of the PLC link section, as bytes.
fn documented_blocks(section: &str) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```hex" {
            continue;
        }
        let mut bytes = Vec::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            let data = line.split_once(':').map_or(line, |(_, data)| data);
            for pair in data.split_whitespace() {
                bytes.push(u8::from_str_radix(pair, 16).expect("hex byte"));
            }
        }
        blocks.push(bytes);
    }
    blocks
}

#[test]
fn documented_examples_are_what_the_encoder_produces_and_all_decode() {
    let section = plc_section();
    for (title, telegram) in examples() {
        let dump = hex_dump(&telegram.encode());
        assert!(
            section.contains(&dump),
            "PROTOCOL.md lacks the bytes of {title}:\n{dump}"
        );
    }
    let blocks = documented_blocks(&section);
    assert!(
        blocks.len() >= examples().len(),
        "{} hex blocks",
        blocks.len()
    );
    for block in blocks {
        assert_eq!(block.len(), TELEGRAM_BYTES);
        let telegram = Telegram::decode(&block).expect("documented bytes decode");
        assert_eq!(telegram.encode().to_vec(), block);
    }
}

/// `cargo test --test plc_telegram -- --ignored --nocapture print_examples` prints the
/// blocks to paste into PROTOCOL.md.
#[test]
#[ignore = "prints documentation, asserts nothing"]
fn print_examples() {
    for (title, telegram) in examples() {
        println!("{title}\n```hex\n{}```\n", hex_dump(&telegram.encode()));
    }
}

#[test]
fn golden_sort_bytes_field_by_field() {
    let (_, sort) = examples().swap_remove(4);
    let bytes = sort.encode();
    let expected: [u8; TELEGRAM_BYTES] = [
        0x53, 0x44, 0x01, 0x10, // magic "SD", version 1, type SORT
        0x00, 0x00, 0x03, 0xea, // seq 1002
        0x00, 0x00, 0x01, 0x1f, 0x71, 0xfb, 0x04, 0xcb, // parcel id 1234567890123
        0x00, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00, // decided_at_us
        0x00, 0x00, 0x00, 0x11, // scanner 17
        0x00, 0x00, 0x00, 0x07, // plan version 7
        0x00, 0x2a, 0x02, 0x00, 0x00, 0x00, // chute 42, reason 2, reserved
        bytes[38], bytes[39], // CRC, checked below
    ];
    assert_eq!(bytes, expected);
    let crc = sortd::plc::checksum::crc16(&bytes[..38]);
    assert_eq!(u16::from_be_bytes([bytes[38], bytes[39]]), crc);
}

fn random_telegram(rng: &mut fastrand::Rng) -> Telegram {
    let chute = rng.u16(1..);
    match rng.u8(0..6) {
        0 => Telegram::Hello(Hello {
            role: if rng.bool() { Role::Host } else { Role::Plc },
            session: rng.u64(1..),
            ack_session: rng.u64(..),
            acked_through_seq: rng.u32(..),
            window_first_seq: rng.u32(..),
            next_seq: rng.u32(..),
        }),
        1 => Telegram::Heartbeat {
            counter: rng.u32(..),
            echo: rng.u32(..),
        },
        2 => Telegram::Ack {
            through_seq: rng.u32(..),
        },
        3 => Telegram::Sort {
            seq: rng.u32(..),
            sort: SortCommand {
                parcel_id: rng.u64(..),
                scanner_id: rng.u32(..),
                chute,
                reason: Reason::ALL[rng.usize(..Reason::ALL.len())],
                plan_version: rng.u32(..),
                decided_at_us: rng.u64(..),
            },
        },
        4 => Telegram::SortConfirm {
            seq: rng.u32(..),
            confirm: SortConfirm {
                parcel_id: rng.u64(..),
                scanner_id: rng.u32(..),
                chute,
                outcome: Outcome::ALL[rng.usize(..Outcome::ALL.len())],
            },
        },
        _ => Telegram::ChuteStatus {
            seq: rng.u32(..),
            chute,
            state: ChuteState::ALL[rng.usize(..ChuteState::ALL.len())],
        },
    }
}

#[test]
fn random_telegrams_round_trip_and_every_single_bit_flip_is_caught() {
    let mut rng = fastrand::Rng::with_seed(0x7E1E);
    for _ in 0..2000 {
        let telegram = random_telegram(&mut rng);
        let bytes = telegram.encode();
        assert_eq!(Telegram::decode(&bytes), Ok(telegram));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"trailing bytes are not this telegram's");
        assert_eq!(Telegram::decode(&longer), Ok(telegram));
        let bit = rng.usize(0..TELEGRAM_BYTES * 8);
        let mut flipped = bytes;
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            Telegram::decode(&flipped).is_err(),
            "bit {bit} of {telegram:?}"
        );
    }
}

/// Re-encode `bytes` after `edit`, fixing the CRC so the check under test is reached.
fn edited(telegram: Telegram, edit: impl Fn(&mut [u8; TELEGRAM_BYTES])) -> Vec<u8> {
    let mut bytes = telegram.encode();
    edit(&mut bytes);
    let crc = sortd::plc::checksum::crc16(&bytes[..38]);
    bytes[38..].copy_from_slice(&crc.to_be_bytes());
    bytes.to_vec()
}

#[test]
fn rejections_name_what_is_wrong() {
    let all = examples();
    let sort = all[4].1;
    let status = all[6].1;
    let hello = all[0].1;
    let mut bad_crc = sort.encode();
    bad_crc[39] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, TelegramDecodeError)> = vec![
        (
            "short",
            sort.encode()[..39].to_vec(),
            TelegramDecodeError::TooShort { got_bytes: 39 },
        ),
        (
            "magic",
            edited(sort, |b| b[0] = b'X'),
            TelegramDecodeError::BadMagic { got: 0x5844 },
        ),
        (
            "version",
            edited(sort, |b| b[2] = 2),
            TelegramDecodeError::UnsupportedVersion { got: 2 },
        ),
        (
            "type",
            edited(sort, |b| b[3] = 0x7f),
            TelegramDecodeError::UnknownType { got: 0x7f },
        ),
        (
            "crc",
            bad_crc.to_vec(),
            TelegramDecodeError::ChecksumMismatch {
                computed: u16::from_be_bytes([bad_crc[38], bad_crc[39] ^ 0xff]),
                carried: u16::from_be_bytes([bad_crc[38], bad_crc[39]]),
            },
        ),
        (
            "reserved",
            edited(sort, |b| b[36] = 1),
            TelegramDecodeError::ReservedNotZero { offset: 36 },
        ),
        (
            "reason",
            edited(sort, |b| b[34] = 9),
            TelegramDecodeError::InvalidField {
                field: "reason",
                value: 9,
            },
        ),
        (
            "chute zero",
            edited(status, |b| b[8..10].copy_from_slice(&[0, 0])),
            TelegramDecodeError::InvalidField {
                field: "chute",
                value: 0,
            },
        ),
        (
            "state",
            edited(status, |b| b[10] = 3),
            TelegramDecodeError::InvalidField {
                field: "state",
                value: 3,
            },
        ),
        (
            "outcome",
            edited(all[5].1, |b| b[22] = 0),
            TelegramDecodeError::InvalidField {
                field: "outcome",
                value: 0,
            },
        ),
        (
            "role",
            edited(hello, |b| b[32] = 3),
            TelegramDecodeError::InvalidField {
                field: "role",
                value: 3,
            },
        ),
        (
            "session zero",
            edited(hello, |b| b[8..16].copy_from_slice(&[0; 8])),
            TelegramDecodeError::InvalidField {
                field: "session",
                value: 0,
            },
        ),
        (
            "ack with a body",
            edited(all[3].1, |b| b[8] = 1),
            TelegramDecodeError::ReservedNotZero { offset: 8 },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(Telegram::decode(&bytes), Err(expected), "{name}");
    }
    // Type codes are distinct and each example has the type it claims.
    let kinds: Vec<u8> = all.iter().map(|(_, t)| t.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            kind::HELLO,
            kind::HELLO,
            kind::HEARTBEAT,
            kind::ACK,
            kind::SORT,
            kind::SORT_CONFIRM,
            kind::CHUTE_STATUS
        ]
    );
}

/// Rough cost of the codec and the whole link path, relative to a CRC-only baseline
/// measured in the same run. Prints, asserts nothing:
/// `cargo test --release --test plc_telegram -- --ignored --nocapture measure_cost`
#[test]
#[ignore = "measurement, prints only"]
fn measure_cost() {
    use std::hint::black_box;
    use std::time::{Duration, Instant};
    const ROUNDS: u32 = 2_000_000;
    let mut rng = fastrand::Rng::with_seed(1);
    let telegrams: Vec<Telegram> = (0..1024).map(|_| random_telegram(&mut rng)).collect();
    let encoded: Vec<[u8; TELEGRAM_BYTES]> = telegrams.iter().map(Telegram::encode).collect();
    let per_op = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);

    let start = Instant::now();
    for round in 0..ROUNDS {
        let bytes = &encoded[round as usize % encoded.len()];
        black_box(sortd::plc::checksum::crc16(black_box(&bytes[..38])));
    }
    let crc_ns = per_op(start);
    let start = Instant::now();
    for round in 0..ROUNDS {
        black_box(black_box(&telegrams[round as usize % telegrams.len()]).encode());
    }
    let encode_ns = per_op(start);
    let start = Instant::now();
    for round in 0..ROUNDS {
        black_box(Telegram::decode(black_box(&encoded[round as usize % encoded.len()])).ok());
    }
    let decode_ns = per_op(start);

    // Host submit + transmit, PLC input + event + ACK, host ACK input: one SORT through
    // both state machines, batched 64 per round trip.
    let now = Instant::now();
    let mut host = sortd::plc::HostLink::new(sortd::plc::LinkConfig::default(), now);
    let mut plc = sortd::plc::PlcPeer::new(
        sortd::plc::LinkConfig {
            session: 2,
            ..sortd::plc::LinkConfig::default()
        },
        now,
    );
    host.handle_connected(now);
    plc.handle_connected(now);
    let (mut to_plc, mut to_host) = (Vec::new(), Vec::new());
    let batches = ROUNDS / 64;
    let start = Instant::now();
    for batch in 0..=batches {
        if batch == 1 {
            // Exclude the handshake round from the timing.
            while host.poll_event().is_some() {}
        }
        for parcel in 0..64u64 {
            let _ = host.submit(
                SortCommand {
                    parcel_id: parcel,
                    scanner_id: 1,
                    chute: 5,
                    reason: Reason::SortedPrimary,
                    plan_version: 1,
                    decided_at_us: 0,
                },
                now + Duration::from_secs(3600),
            );
        }
        to_plc.clear();
        host.poll_transmit(now, &mut to_plc);
        plc.handle_input(now, &to_plc);
        while let Some(event) = plc.poll_event() {
            black_box(event);
        }
        to_host.clear();
        plc.poll_transmit(now, &mut to_host);
        host.handle_input(now, &to_host);
        while let Some(event) = host.poll_event() {
            black_box(event);
        }
    }
    let link_ns = start.elapsed().as_nanos() as f64 / f64::from(batches * 64);
    assert_eq!(host.unacked(), 0);
    println!(
        "per telegram: crc16 {crc_ns:.1} ns, encode {encode_ns:.1} ns ({:.1}x crc), \
         decode {decode_ns:.1} ns ({:.1}x crc), host->PLC->ACK link path {link_ns:.1} ns \
         ({:.1}x crc)",
        encode_ns / crc_ns,
        decode_ns / crc_ns,
        link_ns / crc_ns
    );
}
