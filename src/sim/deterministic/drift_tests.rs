//! Drift tests: behaviours where the simulator once differed from the daemon because it
//! kept its own copy of the event loops (issue 13). Each case drives the simulated world
//! with hand-made bytes and asserts what the daemon does; they failed on the copied
//! loops and pass now that the simulator drives the daemon's own core.

use std::time::Instant;

use crate::wire::{self, Barcodes, FRAME_TYPE_SCAN, Frame, MAGIC, ScanFlags, ScanFrame};

use super::SimOptions;
use super::fixtures::{PlanFixtures, exact_key};
use super::world::{Mode, World};

fn scan_bytes(scanner_id: u32, parcel_id: u64) -> Vec<u8> {
    let key = exact_key(parcel_id % 7);
    let codes: [&[u8]; 1] = [&key];
    let frame = Frame::Scan(ScanFrame {
        scanner_id,
        sequence: parcel_id as u32,
        parcel_id,
        scanned_at_us: 0,
        barcodes: Barcodes::from_slice(&codes).expect("one barcode fits"),
        destination: None,
        weight_g: 1000,
        length_mm: 300,
        width_mm: 200,
        height_mm: 100,
        flags: ScanFlags::default(),
    });
    let mut bytes = Vec::new();
    wire::encode(&frame, &mut bytes).expect("encodes");
    bytes
}

/// The start of a scan frame that declares 1000 bytes and never completes.
fn cut_off_frame_start() -> Vec<u8> {
    let mut bytes = vec![MAGIC[0], MAGIC[1], 1, FRAME_TYPE_SCAN, 0xE8, 0x03, 0, 0];
    bytes.extend_from_slice(&[b'x'; 40]);
    bytes
}

/// A world whose scanners send nothing on their own, with `buffer_bytes` per connection.
fn quiet_world(fixtures: &PlanFixtures, buffer_bytes: usize) -> World<'_> {
    let options = SimOptions {
        parcels_per_seed: 10,
        isolation_check: false,
        planted_bug: None,
    };
    let mut world = World::new(
        7,
        Mode::Isolation { garbage: false },
        &options,
        fixtures,
        Instant::now(),
    )
    .expect("world");
    world.quiet_for_test(buffer_bytes);
    // Let every scanner connect and say hello.
    for _ in 0..5 {
        world.step_for_test().expect("no promise broken");
    }
    world
}

#[test]
fn a_full_buffer_with_a_cut_off_frame_resynchronises_at_the_next_frame() {
    let fixtures = PlanFixtures::create().expect("fixtures");
    let mut world = quiet_world(&fixtures, 256);
    let before = world.decided_for_test();
    let mut bytes = cut_off_frame_start();
    for parcel_id in 1..=6 {
        bytes.extend(scan_bytes(1000, parcel_id));
    }
    world.write_for_test(0, &bytes, false);
    for _ in 0..20 {
        world.step_for_test().expect("no promise broken");
    }
    // The daemon skips only the cut-off frame (`resync_offset`) and decides all six.
    assert_eq!(world.decided_for_test() - before, 6);
}

#[test]
fn a_connection_that_ends_decides_the_frames_behind_a_cut_off_one() {
    let fixtures = PlanFixtures::create().expect("fixtures");
    let mut world = quiet_world(&fixtures, 8192);
    let before = world.decided_for_test();
    let mut bytes = cut_off_frame_start();
    bytes.extend(scan_bytes(1000, 1));
    bytes.extend(scan_bytes(1000, 2));
    world.write_for_test(0, &bytes, true);
    for _ in 0..20 {
        world.step_for_test().expect("no promise broken");
    }
    // Salvage: the daemon drops the cut-off frame and decides the two behind it.
    assert_eq!(world.decided_for_test() - before, 2);
}

#[test]
fn a_connection_past_its_frame_deadline_decides_what_it_holds_first() {
    let fixtures = PlanFixtures::create().expect("fixtures");
    let mut world = quiet_world(&fixtures, 8192);
    let before = world.decided_for_test();
    let mut bytes = cut_off_frame_start();
    bytes.extend(scan_bytes(1000, 1));
    world.write_for_test(0, &bytes, false);
    // Long enough for any drawn frame deadline (at most 1 s, steps of at least 1 ms).
    for _ in 0..1500 {
        world.step_for_test().expect("no promise broken");
    }
    assert!(world.closed_for_test() >= 1, "the deadline closed it");
    assert_eq!(world.decided_for_test() - before, 1);
}

#[test]
fn a_text_scanner_s_telegrams_are_decided() {
    let fixtures = PlanFixtures::create().expect("fixtures");
    let mut world = quiet_world(&fixtures, 8192);
    world.make_text_for_test(1);
    // It reconnects within 60 ms (steps of at least 1 ms).
    for _ in 0..100 {
        world.step_for_test().expect("no promise broken");
    }
    let before = world.decided_for_test();
    let mut bytes = vec![wire::STX];
    bytes.extend_from_slice(&exact_key(3));
    bytes.push(wire::ETX);
    bytes.extend_from_slice(b"\x02NoRead\x03");
    world.write_for_test(1, &bytes, false);
    for _ in 0..20 {
        world.step_for_test().expect("no promise broken");
    }
    assert_eq!(world.decided_for_test() - before, 2);
}
