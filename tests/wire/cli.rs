//! `sortd frames decode/encode` driven as a real process.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn sortd(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start sortd: {error}"));
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .unwrap_or_else(|error| panic!("{error}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

#[test]
fn decode_prints_the_domain_telegram_fields() {
    let dws = b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03";
    let lines = json_lines(&sortd(&["frames", "decode", "--profile", "sick-dws"], dws));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["type"], "scan");
    assert_eq!(line["parcel_id"], 145);
    assert_eq!(line["barcodes"], serde_json::json!(["1JVGL0012345"]));
    assert_eq!(line["weight_g"], 81212);
    assert_eq!(
        [&line["length_mm"], &line["width_mm"], &line["height_mm"]],
        [321, 150, 87]
    );

    let datalogic =
        b"\x020027110002054872550918034976966,1234567890123,0467,675898767566\r\n\x02???????\r\n";
    let lines = json_lines(&sortd(
        &["frames", "decode", "--profile", "datalogic"],
        datalogic,
    ));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["barcodes"].as_array().map(Vec::len), Some(4));
    assert_eq!(lines[0]["parcel_id"], 0);
    assert_eq!(lines[1]["barcodes"], serde_json::json!([]));

    let clv = b"\x02ABC123,XYZ789;ST=5\r\n\x03";
    let lines = json_lines(&sortd(&["frames", "decode", "--profile", "sick-clv"], clv));
    assert_eq!(lines[0]["flag_names"], serde_json::json!(["multi_read"]));
}

#[test]
fn encode_then_decode_gives_the_frames_back_and_reports_garbage() {
    let input = concat!(
        r#"{"type":"hello","scanner_id":9,"protocol_version":1,"heartbeat_interval_ms":1000}"#,
        "\n",
        r#"{"type":"scan","scanner_id":9,"sequence":1,"parcel_id":77,"barcodes":["JD0146",{"hex":"00ff"}],"destination":"330106001","weight_g":1500,"flags":2}"#,
        "\n\n",
        r#"{"type":"heartbeat","scanner_id":9,"sequence":4}"#,
        "\n"
    );
    let encoded = sortd(&["frames", "encode"], input.as_bytes());
    assert!(
        encoded.status.success(),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    let mut stream = b"xx".to_vec();
    stream.extend_from_slice(&encoded.stdout);
    stream.extend_from_slice(b"\xa5\x5d\x01"); // a cut-off frame at the end
    let lines = json_lines(&sortd(&["frames", "decode"], &stream));
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["type"].as_str())
        .collect();
    assert_eq!(kinds, ["error", "hello", "scan", "heartbeat", "error"]);
    assert_eq!(lines[0]["error"], "bad_magic");
    assert_eq!(lines[0]["skipped"], 2);
    assert_eq!(lines[1]["offset"], 2);
    assert_eq!(
        lines[2]["barcodes"],
        serde_json::json!(["JD0146", {"hex": "00ff"}])
    );
    assert_eq!(lines[2]["destination"], "330106001");
    assert_eq!(lines[2]["parcel_id"], 77);
    assert_eq!(lines[4]["error"], "truncated");
    assert_eq!(lines[4]["skipped"], 3);

    // decode | encode reproduces the frames byte for byte (error lines are passed over).
    let decoded = sortd(&["frames", "decode"], &stream);
    let again = sortd(&["frames", "encode"], &decoded.stdout);
    assert!(again.status.success());
    assert_eq!(again.stdout, encoded.stdout);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let unknown = sortd(&["frames", "decode", "--profile", "cognex"], b"");
    assert_eq!(unknown.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("sick-dws"));

    let cases: [(&str, &str); 4] = [
        (r#"{"type":"scan","barcodes":[""]}"#, "barcode_length"),
        (r#"{"type":"scan","bogus":1}"#, "not a frame"),
        (
            r#"{"type":"hello","protocol_version":0}"#,
            "protocol_version",
        ),
        ("not json", "not JSON"),
    ];
    for (line, reason) in cases {
        let output = sortd(&["frames", "encode"], line.as_bytes());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{line}");
        assert!(
            stderr.contains(reason) && stderr.contains("line 1"),
            "{line}: {stderr}"
        );
    }
}
