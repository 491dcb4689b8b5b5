//! `sortd run` as a real process over real sockets: scripted scanners on one side, a
//! recording PLC on the other.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{
    BinaryScanner, Parcel, TestPlc, Threads, closed_by_peer, encode_scan, field, start_daemon,
    start_daemon_threads, wait_until,
};
use sortd::decision::Reason;
use sortd::plc::ChuteState;
use sortd::sim::plc::{ChuteEvent, LinkFault, LinkFaultKind};

/// The version the daemon must stamp: the test plan compiled the same way.
fn test_plan_version() -> u32 {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("plan.csv");
    let compiled = folder.path().join("plan.sortplan");
    std::fs::write(&csv, crate::common::TEST_PLAN_CSV).unwrap();
    sortd::plan::compile_file(&csv, &compiled).expect("test plan compiles");
    sortd::plan::Plan::open(&compiled).unwrap().version()
}

#[test]
fn mixed_binary_and_text_scanners_get_the_plans_decisions() {
    mixed_binary_and_text_scanners_get_the_plans_decisions_in(Threads::Single);
}

#[test]
fn mixed_binary_and_text_scanners_get_the_plans_decisions_split() {
    mixed_binary_and_text_scanners_get_the_plans_decisions_in(Threads::Split);
}

fn mixed_binary_and_text_scanners_get_the_plans_decisions_in(threads: Threads) {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_threads(
        plc.address,
        &[
            "protocol = \"binary\"",
            "protocol = \"sick-dws\"\nscanner_id = 101",
        ],
        "",
        threads,
    );
    plc.wait_connected();
    let mut binary = BinaryScanner::connect(daemon.scanner_addresses[0], 21);
    let cases: &[(Parcel, u16, Reason)] = &[
        (
            Parcel {
                parcel_id: 1,
                barcodes: vec!["YT0000000000001"],
                destination: None,
            },
            7,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 2,
                barcodes: vec!["YT0000000000002"],
                destination: Some("3301"),
            },
            9,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 3,
                barcodes: vec![],
                destination: Some("330106001005"),
            },
            14,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 4,
                barcodes: vec!["LG1234567890123"],
                destination: Some("330200"),
            },
            101,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 5,
                barcodes: vec!["LG1234567890124"],
                destination: Some("3301061"),
            },
            12,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 6,
                barcodes: vec![],
                destination: None,
            },
            998,
            Reason::NoRead,
        ),
        (
            Parcel {
                parcel_id: 7,
                barcodes: vec!["YT0000000000001", "YT0000000000002"],
                destination: None,
            },
            997,
            Reason::MultiRead,
        ),
        (
            Parcel {
                parcel_id: 8,
                barcodes: vec!["YT0000000000001", "YT0000000000003"],
                destination: None,
            },
            7,
            Reason::SortedPrimary,
        ),
        (
            Parcel {
                parcel_id: 9,
                barcodes: vec!["LG1234567890125"],
                destination: Some("440000"),
            },
            999,
            Reason::NoRule,
        ),
    ];
    for (parcel, _, _) in cases {
        binary.send(parcel);
    }
    // The same parcel again inside the duplicate window: decided, never actuated twice.
    binary.send(&cases[0].0);

    let mut text = TcpStream::connect(daemon.scanner_addresses[1]).unwrap();
    text.write_all(b"\x020145;YT0000000000002;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03")
        .unwrap();
    text.write_all(b"\x020146;NoRead;000001000;g;0;0100;0100;0100;mm;0000;1000000\x03")
        .unwrap();

    let version = test_plan_version();
    for (parcel, chute, reason) in cases {
        let sort = plc.recorder.wait_for(21, parcel.parcel_id);
        assert_eq!(
            (sort.chute, sort.reason),
            (*chute, *reason),
            "parcel {parcel:?}"
        );
        assert_eq!(sort.plan_version, version);
    }
    let dws = plc.recorder.wait_for(101, 145);
    assert_eq!((dws.chute, dws.reason), (9, Reason::SortedPrimary));
    let no_read = plc.recorder.wait_for(101, 146);
    assert_eq!((no_read.chute, no_read.reason), (998, Reason::NoRead));

    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(field(&stopped, "scans").as_deref(), Some("12"), "{stopped}");
    assert_eq!(
        field(&stopped, "decided").as_deref(),
        Some("12"),
        "{stopped}"
    );
    assert_eq!(
        field(&stopped, "sent_to_plc").as_deref(),
        Some("11"),
        "{stopped}"
    );
    assert!(stopped.contains("duplicate=1/0"), "{stopped}");
    assert_eq!(plc.recorder.find(21, 1).len(), 1, "parcel 1 actuated once");
}

#[test]
fn full_and_disabled_chutes_send_parcels_to_alternates_then_to_the_exception_chute() {
    let at_start = |chute, state| ChuteEvent {
        at: Duration::ZERO,
        chute,
        state,
    };
    let plc = TestPlc::start(
        vec![],
        vec![
            at_start(12, ChuteState::Full),
            at_start(7, ChuteState::Disabled),
            at_start(101, ChuteState::Full),
            at_start(102, ChuteState::Disabled),
        ],
    );
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], "");
    plc.wait_connected();
    wait_until("the daemon to apply four chute states", || {
        plc.counters.reports_acked.load(Ordering::Relaxed) >= 4
    });
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 5);
    scanner.send(&Parcel {
        parcel_id: 1,
        barcodes: vec![],
        destination: Some("330105"),
    });
    scanner.send(&Parcel {
        parcel_id: 2,
        barcodes: vec!["YT0000000000001"],
        destination: None,
    });
    scanner.send(&Parcel {
        parcel_id: 3,
        barcodes: vec![],
        destination: Some("3302"),
    });
    scanner.send(&Parcel {
        parcel_id: 4,
        barcodes: vec!["YT0000000000002"],
        destination: None,
    });
    let expect = [
        (1, 13, Reason::SortedAlternate),
        (2, 8, Reason::SortedAlternate),
        (3, 999, Reason::ChuteUnavailable),
        (4, 9, Reason::SortedPrimary),
    ];
    for (parcel_id, chute, reason) in expect {
        let sort = plc.recorder.wait_for(5, parcel_id);
        assert_eq!(
            (sort.chute, sort.reason),
            (chute, reason),
            "parcel {parcel_id}"
        );
    }
}

#[test]
fn a_restarted_daemon_learns_the_full_chutes_from_the_plc() {
    // Issue 15, defect 3: after a restart sortd sent the next parcel to a full chute.
    let plc = TestPlc::start(
        vec![],
        vec![ChuteEvent {
            at: Duration::ZERO,
            chute: 12,
            state: ChuteState::Full,
        }],
    );
    let first = start_daemon(plc.address, &["protocol = \"binary\""], "");
    plc.wait_connected();
    wait_until("the first daemon to apply the chute state", || {
        plc.counters.reports_acked.load(Ordering::Relaxed) >= 1
    });
    let to_3301 = |parcel_id| Parcel {
        parcel_id,
        barcodes: vec![],
        destination: Some("330105"),
    };
    BinaryScanner::connect(first.scanner_addresses[0], 6).send(&to_3301(1));
    assert_eq!(plc.recorder.wait_for(6, 1).chute, 13);
    let (code, _) = first.terminate();
    assert_eq!(code, Some(0));

    let connections_before = plc.counters.connections.load(Ordering::Relaxed);
    let second = start_daemon(plc.address, &["protocol = \"binary\""], "");
    wait_until("the new daemon's PLC link", || {
        plc.counters.connections.load(Ordering::Relaxed) > connections_before
    });
    // The PLC announces chute 12 again to the new host session.
    wait_until("the new daemon to learn chute 12 is full", || {
        second
            .log_lines("chute status")
            .iter()
            .any(|line| line.contains("chute=12") && line.contains("Full"))
    });
    BinaryScanner::connect(second.scanner_addresses[0], 6).send(&to_3301(2));
    let sort = plc.recorder.wait_for(6, 2);
    assert_eq!((sort.chute, sort.reason), (13, Reason::SortedAlternate));
}

#[test]
fn plc_link_loss_and_reconnect_lose_no_decision_and_actuate_none_twice() {
    plc_link_loss_and_reconnect_lose_no_decision_and_actuate_none_twice_in(Threads::Single);
}

#[test]
fn plc_link_loss_and_reconnect_lose_no_decision_and_actuate_none_twice_split() {
    plc_link_loss_and_reconnect_lose_no_decision_and_actuate_none_twice_in(Threads::Split);
}

fn plc_link_loss_and_reconnect_lose_no_decision_and_actuate_none_twice_in(threads: Threads) {
    let drop_at = |millis| LinkFault {
        at: Duration::from_millis(millis),
        kind: LinkFaultKind::Drop,
    };
    let plc = TestPlc::start(vec![drop_at(400), drop_at(900), drop_at(1400)], vec![]);
    let daemon = start_daemon_threads(plc.address, &["protocol = \"binary\""], "", threads);
    plc.wait_connected();
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 9);
    const PARCELS: u64 = 2_000;
    for parcel_id in 1..=PARCELS {
        scanner.send(&Parcel {
            parcel_id,
            barcodes: vec!["YT0000000000002"],
            destination: None,
        });
        if parcel_id % 20 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Let the link come back before the drain so retransmissions can land.
    wait_until("a reconnect after the last drop", || {
        plc.counters.connections.load(Ordering::Relaxed) >= 4
    });
    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    let number = |key: &str| -> u64 {
        field(&stopped, key)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {stopped}"))
    };
    assert_eq!(number("scans"), PARCELS);
    assert_eq!(number("decided"), PARCELS);
    assert_eq!(
        number("sent_to_plc") + number("undelivered"),
        PARCELS,
        "{stopped}"
    );

    let sorts = plc.recorder.sorts.lock().unwrap().clone();
    let unique: HashSet<u64> = sorts.iter().map(|sort| sort.parcel_id).collect();
    assert_eq!(unique.len(), sorts.len(), "a parcel was actuated twice");
    assert_eq!(sorts.len() as u64, number("sent_to_plc"), "{stopped}");
    assert!(plc.counters.connections.load(Ordering::Relaxed) >= 4);
}

/// Connects from `source` (a loopback address other than 127.0.0.1).
fn connect_from(source: &str, target: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&target.into()).unwrap();
    socket.into()
}

#[test]
fn garbage_slowloris_floods_and_strangers_do_not_disturb_a_good_scanner() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon(
        plc.address,
        &["protocol = \"binary\""],
        "[scanners]\nconnections_max = 6\nframe_deadline_ms = 300\nallow = [\"127.0.0.1/32\"]\n",
    );
    let address = daemon.scanner_addresses[0];
    plc.wait_connected();
    let mut good = BinaryScanner::connect(address, 1);
    good.send(&Parcel {
        parcel_id: 1,
        barcodes: vec!["YT0000000000002"],
        destination: None,
    });
    plc.recorder.wait_for(1, 1);

    // Garbage, then a valid frame on the same connection: the frame is recovered.
    let mut noisy = BinaryScanner::connect(address, 2);
    let mut rng = fastrand::Rng::with_seed(7);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    noisy.send_raw(&garbage);
    noisy.send(&Parcel {
        parcel_id: 500,
        barcodes: vec![],
        destination: Some("3301"),
    });
    assert_eq!(plc.recorder.wait_for(2, 500).chute, 12);

    // Half a frame, then silence: closed after the frame deadline.
    let mut frame = Vec::new();
    encode_scan(
        3,
        &Parcel {
            parcel_id: 9,
            barcodes: vec![],
            destination: None,
        },
        &mut frame,
    );
    let mut slow = TcpStream::connect(address).unwrap();
    slow.write_all(&frame[..frame.len() / 2]).unwrap();
    assert!(closed_by_peer(&mut slow), "slowloris connection stays open");

    // A stranger's address is refused at accept.
    let mut stranger = connect_from("127.0.0.2", address);
    assert!(closed_by_peer(&mut stranger), "stranger was served");

    // A flood past the limit: two are open (good, noisy), so four more fit.
    let mut flood: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    good.send(&Parcel {
        parcel_id: 2,
        barcodes: vec!["YT0000000000002"],
        destination: None,
    });
    assert_eq!(
        plc.recorder.wait_for(1, 2).chute,
        9,
        "good scanner still served"
    );
    let mut refused = 0;
    for stream in &mut flood {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut byte = [0u8; 1];
        if matches!(std::io::Read::read(stream, &mut byte), Ok(0)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 6);
    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(
        field(&stopped, "refused_limit").as_deref(),
        Some("6"),
        "{stopped}"
    );
    assert_eq!(
        field(&stopped, "refused_address").as_deref(),
        Some("1"),
        "{stopped}"
    );
    assert_eq!(
        field(&stopped, "closed_frame_deadline").as_deref(),
        Some("1"),
        "{stopped}"
    );
    let skipped: u64 = field(&stopped, "bytes_skipped").unwrap().parse().unwrap();
    assert!(
        skipped >= 4096 - 64,
        "garbage counted as skipped: {stopped}"
    );
}

#[test]
fn a_thousand_scanners_at_once() {
    a_thousand_scanners_at_once_in(Threads::Single);
}

#[test]
fn a_thousand_scanners_at_once_split() {
    a_thousand_scanners_at_once_in(Threads::Split);
}

fn a_thousand_scanners_at_once_in(threads: Threads) {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_threads(
        plc.address,
        &["protocol = \"binary\""],
        "[scanners]\nconnections_max = 1100\n",
        threads,
    );
    plc.wait_connected();
    let scanners: Vec<BinaryScanner> = (0..1_000u32)
        .map(|index| BinaryScanner::connect(daemon.scanner_addresses[0], 1_000 + index))
        .collect();
    let mut scanners = scanners;
    for scanner in &mut scanners {
        let parcel_id = u64::from(scanner.scanner_id);
        scanner.send(&Parcel {
            parcel_id,
            barcodes: vec![],
            destination: Some("33"),
        });
    }
    wait_until("a SORT from every scanner", || {
        plc.recorder.count() >= 1_000
    });
    let sorts = plc.recorder.sorts.lock().unwrap().clone();
    let scanners_seen: HashSet<u32> = sorts.iter().map(|sort| sort.scanner_id).collect();
    assert_eq!(scanners_seen.len(), 1_000);
    assert!(sorts.iter().all(|sort| sort.chute == 101));
    drop(daemon);
}

#[test]
fn bad_configuration_exits_64_and_names_the_key() {
    let cases = [
        (
            "[plan]\npath = \"plan.csv\"\n[scanners]\nconections_max = 5\n",
            "conections_max",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[[scanners.listeners]]\naddress = \"0.0.0.0:7100\"\nprotocol = \"sick-xyz\"\n",
            "scanners.listeners[0].protocol",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[plc]\naddress = \"nowhere\"\n",
            "plc.address",
        ),
        ("[plan]\npath = \"missing.csv\"\n", "plan.path"),
        (
            "[plan]\npath = \"plan.csv\"\n[pipeline]\nworkers = 0\n",
            "pipeline.workers",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[scanners]\nallow = [\"10.0.0.0/40\"]\n",
            "scanners.allow[0]",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[plc]\nmode = \"listen\"\n",
            "plc.allow",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[[scanners.listeners]]\naddress = \"0.0.0.0:7100\"\nallow = []\n",
            "scanners.listeners[0].allow",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[hub]\nenabled = true\nnode = \"n1\"\ngroup = \"g\"\n",
            "hub.preadvice",
        ),
        (
            "[plan]\npath = \"plan.csv\"\n[hub]\nenabled = true\nnode = \"n1\"\ngroup = \"g\"\npreadvice = false\n[hub.tls]\nclient_key_file = \"k.pem\"\n",
            "hub.tls.client_cert_file",
        ),
    ];
    for (config, key) in cases {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("plan.csv"), crate::common::TEST_PLAN_CSV).unwrap();
        let path = folder.path().join("sortd.toml");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{config}: {stderr}");
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
}

#[test]
fn the_documented_example_configuration_is_valid() {
    let file = std::fs::read_to_string(crate::common::project_path("config/sortd.toml")).unwrap();
    let parsed = sortd::daemon::config::parse(&file).expect("parses");
    let config = sortd::daemon::config::validate(parsed, &crate::common::project_path("config"))
        .expect("validates");
    assert_eq!(config.listeners.len(), 2);
    assert!(config.plan_path.ends_with("example-plan.csv"));
}
#[test]
fn decisions_that_miss_their_deadline_go_late_to_the_late_chute() {
    // The PLC stops reading for two seconds. A decision that entered the link's window
    // has left on time; once the window (4096) is full the PLC thread stops taking
    // decisions, and those that leave after the 50 ms deadline go out late.
    let stall = LinkFault {
        at: Duration::from_millis(200),
        kind: LinkFaultKind::Stall(Duration::from_secs(2)),
    };
    let plc = TestPlc::start(vec![stall], vec![]);
    let daemon = start_daemon(
        plc.address,
        &["protocol = \"binary\""],
        "[pipeline]\ndeadline_ms = 50\n",
    );
    plc.wait_connected();
    wait_until("the PLC link to be up", || {
        daemon.log().iter().any(|line| line.contains("PLC link up"))
    });
    // Into the stall (it starts 200 ms after the link came up).
    std::thread::sleep(Duration::from_millis(400));
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 4);
    const PARCELS: u64 = 9_000;
    for parcel_id in 1..=PARCELS {
        scanner.send(&Parcel {
            parcel_id,
            barcodes: vec!["YT0000000000002"],
            destination: None,
        });
    }
    wait_until("every parcel at the PLC", || {
        plc.recorder.count() as u64 >= PARCELS
    });
    let sorts = plc.recorder.sorts.lock().unwrap().clone();
    let unique: HashSet<u64> = sorts.iter().map(|sort| sort.parcel_id).collect();
    assert_eq!(unique.len() as u64, PARCELS, "each parcel exactly once");
    let late: Vec<_> = sorts
        .iter()
        .filter(|sort| sort.reason == Reason::Late)
        .collect();
    assert!(!late.is_empty(), "the stall made some decisions late");
    assert!(late.iter().all(|sort| sort.chute == 996));
    assert!(
        sorts
            .iter()
            .filter(|sort| sort.reason != Reason::Late)
            .all(|sort| (sort.chute, sort.reason) == (9, Reason::SortedPrimary))
    );
}

#[test]
fn a_valid_frame_behind_a_fake_long_header_is_decided_when_the_connection_ends() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon(
        plc.address,
        &["protocol = \"binary\""],
        "[scanners]\nframe_deadline_ms = 300\n",
    );
    plc.wait_connected();
    // Magic, version 1, SCAN, a length of 4000 and zero reserved bytes: a header the
    // decoder must wait on, followed by a real frame that is complete.
    let fake_header = [0xA5, 0x5D, 0x01, 0x03, 0xA0, 0x0F, 0x00, 0x00];
    for (scanner_id, close_write) in [(61u32, true), (62u32, false)] {
        let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], scanner_id);
        scanner.send_raw(&fake_header);
        scanner.send(&Parcel {
            parcel_id: 1,
            barcodes: vec!["YT0000000000002"],
            destination: None,
        });
        if close_write {
            // The scanner hangs up: what it sent is still decided.
            scanner.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // Otherwise the frame deadline ends the connection.
        let sort = plc.recorder.wait_for(scanner_id, 1);
        assert_eq!((sort.chute, sort.reason), (9, Reason::SortedPrimary));
    }
}
