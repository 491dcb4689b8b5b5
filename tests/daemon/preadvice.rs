//! Pre-advice on the daemon: `[preadvice]` turns the node's overlay on, the decide path
//! resolves through it, and a restart replays the log.

use std::process::Command;

use sortd::decision::Reason;

use crate::common::{BinaryScanner, Parcel, TEST_PLAN_CSV, TestPlc, start_daemon_in};

#[test]
fn pre_advised_parcels_get_the_pre_advised_chute_and_others_the_plans() {
    let plc = TestPlc::start(vec![], vec![]);
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path();
    std::fs::write(path.join("plan.csv"), TEST_PLAN_CSV).expect("plan written");
    std::fs::write(
        path.join("batch.jsonl"),
        "{\"op\":\"add\",\"barcode\":\"YT0000000000009\",\"chutes\":[42]}\n\
         {\"op\":\"add\",\"barcode\":\"YT0000000000002\",\"destination\":\"330106001\"}\n",
    )
    .expect("batch written");
    let sortd = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
            .current_dir(path)
            .args(args)
            .output()
            .expect("sortd runs");
        assert!(output.status.success(), "{args:?}: {output:?}");
    };
    sortd(&["plan", "compile", "plan.csv", "-o", "plan.sortplan"]);
    sortd(&[
        "plan",
        "preadvice",
        "append",
        "--dir",
        "padv",
        "--plan",
        "plan.sortplan",
        "batch.jsonl",
    ]);
    let config = format!(
        "[plan]\npath = \"plan.sortplan\"\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         [plc]\naddress = \"{}\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n\
         [preadvice]\nenabled = true\ndir = \"padv\"\nentries_max = 1000\ncompact_entries = 1000\n",
        plc.address
    );
    let daemon = start_daemon_in(folder, &config, 1, &[]);
    assert_eq!(daemon.log_lines("pre-advice opened").len(), 1);
    plc.wait_connected();
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 5);
    for (parcel_id, barcode) in [
        (1, "YT0000000000009"),
        (2, "YT0000000000002"),
        (3, "YT0000000000003"),
    ] {
        scanner.send(&Parcel {
            parcel_id,
            barcodes: vec![barcode],
            destination: None,
        });
    }
    let expect = [
        (1, 42, Reason::SortedPrimary),
        (2, 14, Reason::SortedPrimary),
        (3, 7, Reason::SortedPrimary),
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
