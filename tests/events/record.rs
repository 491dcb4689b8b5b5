//! The sort event record: the PROTOCOL.md examples are what the encoder writes, and a
//! seeded property test round-trips arbitrary events.

use proptest::prelude::*;
use sortd::decision::Reason;
use sortd::events::record::{
    self, Action, DecisionEvent, Event, FLAG_DIMENSIONS_MEASURED, FLAG_WEIGHT_MEASURED,
    OutcomeEvent, Record, RecordDecoded, Rule,
};
use sortd::events::segment::SegmentHeader;
use sortd::plc::Outcome;
use sortd::wire::Barcodes;

/// The bytes of the dump that follows `<!-- example: NAME -->` in PROTOCOL.md.
fn documented_example(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))
        .unwrap_or_else(|error| panic!("PROTOCOL.md: {error}"));
    let marker = format!("<!-- example: {name} -->");
    let after = text
        .split_once(&marker)
        .map(|(_, after)| after)
        .unwrap_or_else(|| panic!("no {marker} in PROTOCOL.md"));
    let block = after
        .split("```")
        .nth(1)
        .unwrap_or_else(|| panic!("no code block after {marker}"));
    block
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .flat_map(|line| line.split_whitespace().skip(1))
        .map(|pair| u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair}")))
        .collect()
}

fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(row, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}  {}\n", row * 16, hex.join(" "))
        })
        .collect()
}

fn example_decision() -> Event<'static> {
    Event::Decision(DecisionEvent {
        action: Action::Sent,
        parcel_id: 145,
        scanner_id: 7,
        barcodes: Barcodes::from_slice(&[b"JD0001234567"]).unwrap(),
        destination: b"330106",
        chute: 301,
        reason: Reason::SortedPrimary,
        rule: Rule::Prefix,
        plan_name: "hz-w3",
        plan_version: 12,
        pre_advice_seq: 0,
        plc_seq: 1042,
        flags: FLAG_WEIGHT_MEASURED | FLAG_DIMENSIONS_MEASURED,
        weight_g: 1250,
        length_mm: 321,
        width_mm: 150,
        height_mm: 87,
        received_us: 1_732_000_000_123_456,
        decided_after_us: 41,
        sent_after_us: 97,
    })
}

fn example_outcome() -> Event<'static> {
    Event::Outcome(OutcomeEvent {
        parcel_id: 145,
        scanner_id: 7,
        chute: 301,
        outcome: Outcome::Diverted,
        plc_seq: 1042,
        decision_seq: 42,
        confirmed_us: 1_732_000_001_623_456,
    })
}

#[test]
fn documented_examples_are_what_the_encoder_writes() {
    let mut header = Vec::new();
    SegmentHeader {
        first_seq: 42,
        hub_id: "hz1",
        sorter_id: "xb-2",
    }
    .encode(&mut header)
    .unwrap();
    let cases = [
        ("event-decision", 42, Some(example_decision())),
        ("event-outcome", 43, Some(example_outcome())),
        ("segment-header", 0, None),
    ];
    for (name, seq, event) in cases {
        let bytes = match event {
            Some(event) => {
                let mut bytes = Vec::new();
                record::encode(seq, &event, &mut bytes).unwrap();
                match record::decode(&bytes) {
                    RecordDecoded::Complete { record, .. } => {
                        assert_eq!(record, Record { seq, event })
                    }
                    other => panic!("{other:?}"),
                }
                bytes
            }
            None => header.clone(),
        };
        assert_eq!(
            documented_example(name),
            bytes,
            "PROTOCOL.md example {name} differs; the encoder writes:\n{}",
            dump(&bytes)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(10), ..ProptestConfig::default() })]

    #[test]
    fn any_event_round_trips(
        seq in 1u64..,
        codes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..=8),
        destination in proptest::collection::vec(any::<u8>(), 0..=128),
        plan_name in "\\PC{0,40}",
        numbers in any::<[u64; 6]>(),
        choices in any::<[u8; 6]>(),
    ) {
        let slices: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
        let events = [
            Event::Decision(DecisionEvent {
                action: Action::ALL[usize::from(choices[0]) % 4],
                parcel_id: numbers[0],
                scanner_id: numbers[1] as u32,
                barcodes: Barcodes::from_slice(&slices).unwrap(),
                destination: &destination,
                chute: numbers[2] as u16,
                reason: Reason::ALL[usize::from(choices[1]) % Reason::ALL.len()],
                rule: Rule::ALL[usize::from(choices[2]) % Rule::ALL.len()],
                plan_name: &plan_name,
                plan_version: (numbers[2] >> 16) as u32,
                pre_advice_seq: numbers[3],
                plc_seq: (numbers[1] >> 32) as u32,
                flags: choices[3] & 3,
                weight_g: numbers[4] as u32,
                length_mm: (numbers[4] >> 32) as u16,
                width_mm: (numbers[4] >> 48) as u16,
                height_mm: numbers[5] as u16,
                received_us: numbers[5],
                decided_after_us: (numbers[3] >> 8) as u32,
                sent_after_us: (numbers[0] >> 8) as u32,
            }),
            Event::Outcome(OutcomeEvent {
                parcel_id: numbers[0],
                scanner_id: numbers[1] as u32,
                chute: numbers[2] as u16,
                outcome: Outcome::ALL[usize::from(choices[4]) % 4],
                plc_seq: numbers[3] as u32,
                decision_seq: numbers[4],
                confirmed_us: numbers[5],
            }),
        ];
        for event in events {
            let mut bytes = vec![0xAA; usize::from(choices[5] % 4)];
            let prefix = bytes.len();
            let len = record::encode(seq, &event, &mut bytes).unwrap();
            prop_assert_eq!(len, record::encoded_len(&event).unwrap());
            let RecordDecoded::Complete { record, consumed } = record::decode(&bytes[prefix..]) else {
                panic!("did not decode");
            };
            prop_assert_eq!(consumed, len);
            prop_assert_eq!(record, Record { seq, event });
        }
    }
}
