//! A hostile neighbour while sortd sorts under load, over real sockets: the PLC dials
//! sortd (`plc.mode = "listen"`, only 127.0.0.1 allowed), scanners send parcels, and
//! meanwhile a stranger on 127.0.0.2 connects to the PLC port (even with a valid PLC
//! HELLO), an allowed-address connection sends garbage and another never says HELLO,
//! scanners connect from addresses the global or the listener's allow-list refuses, and
//! the metrics endpoint is asked without its password. No parcel may be lost or
//! doubled, the real PLC's session must never drop, and every refusal is counted.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sortd::plc::{Hello, Role, Telegram};

use crate::common::{
    BinaryScanner, Parcel, Scrape, TestPlc, closed_by_peer, http_exchange, nats::free_port,
    parse_openmetrics, start_daemon_in, wait_until,
};

/// Refused by `[scanners] allow` and by `[plc] allow`.
const STRANGER: &str = "127.0.0.2";
/// Allowed by `[scanners] allow`, refused by the second listener's own list.
const OUTSIDER: &str = "127.0.0.3";
const PARCELS: u64 = 3_000;
const ATTEMPTS: usize = 20;
const PASSWORD: &str = "neighbours keep out";

/// A TCP connection to `to` from the loopback address `source`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("binds the source address");
    socket.connect(&to.into()).expect("connects");
    socket.into()
}

fn authorized_scrape(address: SocketAddr) -> Scrape {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{PASSWORD}"));
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: sortd\r\nAccept: application/openmetrics-text\r\n\
         Authorization: Basic {encoded}\r\n\r\n"
    );
    let (status, body) = http_exchange(address, request.as_bytes());
    assert_eq!(status, 200, "{body}");
    parse_openmetrics(&body).unwrap_or_else(|error| panic!("{error}\n{body}"))
}

fn plc_hello() -> [u8; sortd::plc::TELEGRAM_BYTES] {
    Telegram::Hello(Hello {
        role: Role::Plc,
        session: 42,
        ack_session: 0,
        acked_through_seq: 0,
        window_first_seq: 1,
        next_seq: 1,
    })
    .encode()
}

#[test]
fn strangers_are_refused_and_counted_while_the_live_plc_sorts_on() {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("plan.csv"), crate::common::TEST_PLAN_CSV).expect("plan");
    // Cost 4 keeps the test quick; sites use 10 or more.
    let hash = bcrypt::hash(PASSWORD, 4).expect("hashed");
    std::fs::write(
        folder.path().join("web.yml"),
        format!("basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .expect("web-config written");
    let plc_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[plan]\npath = \"plan.csv\"\n\
         [scanners]\nallow = [\"127.0.0.1/32\", \"{OUTSIDER}/32\"]\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         allow = [\"127.0.0.1\"]\n\
         [plc]\nmode = \"listen\"\naddress = \"{plc_address}\"\nallow = [\"127.0.0.1\"]\n\
         heartbeat_interval_ms = 1000\nheartbeats_missed_max = 3\n\
         [metrics]\naddress = \"127.0.0.1:0\"\nweb_config = \"web.yml\"\n"
    );
    let daemon = start_daemon_in(folder, &config, 2, &[]);
    let plc = TestPlc::dialling(plc_address);
    let web = daemon.metrics_address();
    wait_until("the PLC link to be up", || {
        authorized_scrape(web).value("sortd_plc_link_up", &[]) == 1.0
    });

    // Load: one scanner sends every parcel once, paced so the run spans the attacks.
    let scanners = daemon.scanner_addresses.clone();
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let done = done.clone();
        let address = scanners[0];
        std::thread::spawn(move || {
            let mut scanner = BinaryScanner::connect(address, 31);
            for parcel_id in 1..=PARCELS {
                scanner.send(&Parcel {
                    parcel_id,
                    barcodes: vec!["YT0000000000002"],
                    destination: None,
                });
                if parcel_id % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            done.store(true, Ordering::Release);
            scanner
        })
    };

    // An allowed address that never says HELLO: closed at the HELLO deadline (3 s).
    let mut silent = connect_from("127.0.0.1", plc_address);
    // An allowed address that sends garbage instead of a HELLO.
    let mut garbage = connect_from("127.0.0.1", plc_address);
    garbage.write_all(&[0x5a; 40]).expect("sent");
    assert!(closed_by_peer(&mut garbage), "a garbage candidate is kept");

    for attempt in 0..ATTEMPTS {
        // The stranger on the PLC port, with a well-formed PLC HELLO.
        let mut stranger = connect_from(STRANGER, plc_address);
        let _ = stranger.write_all(&plc_hello());
        assert!(closed_by_peer(&mut stranger), "stranger {attempt} kept");
        // Scanners from refused addresses: by the global list, by the listener's own.
        let mut refused = connect_from(STRANGER, scanners[0]);
        assert!(closed_by_peer(&mut refused), "global allow ignored");
        let mut refused = connect_from(OUTSIDER, scanners[1]);
        assert!(closed_by_peer(&mut refused), "listener allow ignored");
        // The metrics endpoint without the password.
        if attempt % 4 == 0 {
            let (status, _) = http_exchange(web, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(status, 401);
        }
    }
    assert!(closed_by_peer(&mut silent), "a silent candidate is kept");

    let _scanner = load.join().expect("load thread");
    assert!(done.load(Ordering::Acquire));
    wait_until("every parcel to reach the PLC", || {
        plc.recorder.count() as u64 >= PARCELS
    });
    let mut seen = vec![0u32; PARCELS as usize + 1];
    for sort in plc.recorder.sorts.lock().expect("sorts").iter() {
        assert_eq!(sort.scanner_id, 31);
        seen[sort.parcel_id as usize] += 1;
    }
    let wrong: Vec<usize> = (1..seen.len()).filter(|&id| seen[id] != 1).collect();
    assert!(wrong.is_empty(), "parcels lost or doubled: {wrong:?}");

    let scrape = authorized_scrape(web);
    let refused =
        |cause| scrape.value("sortd_plc_connections_refused_total", &[("cause", cause)]) as usize;
    assert_eq!(refused("address"), ATTEMPTS);
    assert_eq!(refused("bad_hello"), 1);
    assert_eq!(refused("hello_timeout"), 1);
    assert_eq!(
        scrape.value(
            "sortd_scanner_connections_refused_total",
            &[("cause", "address")]
        ) as usize,
        2 * ATTEMPTS
    );
    assert_eq!(
        scrape.value("sortd_web_refusals_total", &[("cause", "unauthorized")]) as usize,
        ATTEMPTS / 4
    );
    assert_eq!(
        scrape.value("sortd_plc_link_transitions_total", &[("to", "up")]),
        1.0
    );
    assert_eq!(
        scrape.value("sortd_plc_link_transitions_total", &[("to", "down")]),
        0.0
    );
    assert_eq!(plc.counters.connections.load(Ordering::Relaxed), 1);
    assert!(
        daemon.log_lines("PLC connection refused").len() <= 3,
        "refusals are logged once per interval"
    );
}

#[test]
fn an_allowed_plc_that_says_hello_takes_the_link_over_and_gets_the_host_hello() {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("plan.csv"), crate::common::TEST_PLAN_CSV).expect("plan");
    let plc_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[plan]\npath = \"plan.csv\"\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         [plc]\nmode = \"listen\"\naddress = \"{plc_address}\"\nallow = [\"127.0.0.1\"]\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n"
    );
    let daemon = start_daemon_in(folder, &config, 1, &[]);
    let plc = TestPlc::dialling(plc_address);
    let web = daemon.metrics_address();
    wait_until("the PLC link to be up", || {
        crate::common::scrape(web).value("sortd_plc_link_up", &[]) == 1.0
    });
    plc.wait_connected();

    // A restarted PLC (here: a raw socket) dials again and says HELLO: it replaces the
    // live connection and receives sortd's HELLO.
    let mut restarted = connect_from("127.0.0.1", plc_address);
    restarted.write_all(&plc_hello()).expect("HELLO sent");
    restarted
        .set_read_timeout(Some(crate::common::PATIENCE))
        .expect("timeout");
    let mut answer = [0u8; sortd::plc::TELEGRAM_BYTES];
    if let Err(error) = std::io::Read::read_exact(&mut restarted, &mut answer) {
        std::thread::sleep(Duration::from_millis(500));
        panic!(
            "sortd did not answer {:?}: {error}; PLC connections {}; log: {:#?}",
            restarted.local_addr(),
            plc.counters.connections.load(Ordering::Relaxed),
            daemon.log()
        );
    }
    match Telegram::decode(&answer) {
        Ok(Telegram::Hello(hello)) => assert_eq!(hello.role, Role::Host),
        other => panic!("expected the host HELLO, got {other:?}"),
    }
    wait_until("the old connection to be replaced", || {
        crate::common::scrape(web).value("sortd_plc_link_transitions_total", &[("to", "down")])
            >= 1.0
    });
}
