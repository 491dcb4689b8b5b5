//! Text telegrams: the DOMAIN.md examples as golden cases for each built-in profile, and
//! every way a telegram can be wrong.

use sortd::wire::{
    Barcodes, Decoded, Field, Frame, FrameDecodeError, ScanFlags, ScanFrame, TextProfile,
    TextProfileSpec, decode_text,
};

fn profile(name: &str) -> TextProfile {
    TextProfile::builtin(name).unwrap_or_else(|| panic!("no built-in profile {name}"))
}

fn scan<'a>(parcel_id: u64, codes: &[&'a [u8]]) -> ScanFrame<'a> {
    ScanFrame {
        scanner_id: 0,
        sequence: 0,
        parcel_id,
        scanned_at_us: 0,
        barcodes: Barcodes::from_slice(codes).unwrap_or_default(),
        destination: None,
        weight_g: 0,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        flags: ScanFlags::EMPTY,
    }
}

/// Stands for "the whole input" in the tables below.
const WHOLE: usize = usize::MAX;

/// `expected` with [`WHOLE`] replaced by the input's length.
fn resolve<'a>(expected: Decoded<'a>, input: &[u8]) -> Decoded<'a> {
    match expected {
        Decoded::Frame {
            frame,
            consumed: WHOLE,
        } => Decoded::Frame {
            frame,
            consumed: input.len(),
        },
        Decoded::Skip { error, skip: WHOLE } => Decoded::Skip {
            error,
            skip: input.len(),
        },
        other => other,
    }
}

fn frame(scan: ScanFrame<'_>, consumed: usize) -> Decoded<'_> {
    Decoded::Frame {
        frame: Frame::Scan(scan),
        consumed,
    }
}

const DWS: &[u8] = b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03";
const DATALOGIC: &[u8] = b"\x020027110002054872550918034976966,1234567890123,0467,675898767566\r\n";

fn dws_scan(codes: &[&'static [u8]]) -> ScanFrame<'static> {
    ScanFrame {
        weight_g: 81212,
        length_mm: 321,
        width_mm: 150,
        height_mm: 87,
        flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
        ..scan(145, codes)
    }
}

#[test]
fn domain_examples_decode_to_the_right_fields() {
    let multi = ScanFlags::MULTI_READ;
    let partial = ScanFlags::PARTIAL_READ;
    let cases: Vec<(&str, &[u8], Decoded<'_>)> = vec![
        (
            "sick-dws",
            DWS,
            frame(dws_scan(&[b"1JVGL0012345"]), DWS.len()),
        ),
        (
            "sick-dws",
            b"\x020146;NoRead;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03",
            frame(
                ScanFrame {
                    parcel_id: 146,
                    ..dws_scan(&[])
                },
                WHOLE,
            ),
        ),
        (
            "sick-dws",
            b"\x020147;1JVGL0012345;000001500;kg;0;0032;0015;0008;cm;0000;4189050\x03",
            frame(
                ScanFrame {
                    parcel_id: 147,
                    weight_g: 1_500_000,
                    length_mm: 320,
                    width_mm: 150,
                    height_mm: 80,
                    ..dws_scan(&[b"1JVGL0012345"])
                },
                WHOLE,
            ),
        ),
        (
            "datalogic",
            DATALOGIC,
            frame(
                scan(
                    0,
                    &[
                        b"0027110002054872550918034976966",
                        b"1234567890123",
                        b"0467",
                        b"675898767566",
                    ],
                ),
                DATALOGIC.len(),
            ),
        ),
        ("datalogic", b"\x02???????\r\n", frame(scan(0, &[]), WHOLE)),
        (
            "datalogic",
            b"\x021234567890123,?,0467\r\n",
            frame(
                ScanFrame {
                    flags: partial,
                    ..scan(0, &[b"1234567890123", b"0467"])
                },
                WHOLE,
            ),
        ),
        (
            "datalogic",
            b"1234567890123\n",
            frame(scan(0, &[b"1234567890123"]), WHOLE),
        ),
        (
            "sick-clv",
            b"\x021JVGL0012345\r\n\x03",
            frame(scan(0, &[b"1JVGL0012345"]), WHOLE),
        ),
        (
            "sick-clv",
            b"\x02NoRead;ST=2\r\n\x03",
            frame(scan(0, &[]), WHOLE),
        ),
        (
            "sick-clv",
            b"\x021JVGL0012345;ST=0\x03",
            frame(scan(0, &[b"1JVGL0012345"]), WHOLE),
        ),
        (
            "sick-clv",
            b"\x02ABC123,XYZ789;ST=5\x03",
            frame(
                ScanFrame {
                    flags: multi,
                    ..scan(0, &[b"ABC123", b"XYZ789"])
                },
                WHOLE,
            ),
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(
            decode_text(&profile(name), input),
            resolve(expected, input),
            "{name} {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

fn skip(error: FrameDecodeError, skip: usize) -> Decoded<'static> {
    Decoded::Skip { error, skip }
}

fn bad(field: Field) -> FrameDecodeError {
    FrameDecodeError::BadField { field }
}

#[test]
fn faults_give_their_error_and_skip_the_right_bytes() {
    let nine_codes = b"\x021,2,3,4,5,6,7,8,9\r\n";
    let long = [b'7'; 600];
    let mut too_long = vec![0x02];
    too_long.extend_from_slice(&long);
    let cases: Vec<(&str, &[u8], Decoded<'_>)> = vec![
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;00008121x;g;0;0321;0150;0087;mm;0000;4189050\x03",
            skip(bad(Field::Weight), WHOLE),
        ),
        (
            "sick-dws",
            b"\x02014A;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03",
            skip(bad(Field::ParcelId), WHOLE),
        ),
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;000081212;lb;0;0321;0150;0087;mm;0000;4189050\x03",
            skip(bad(Field::WeightUnit), WHOLE),
        ),
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;in;0000;4189050\x03",
            skip(bad(Field::LengthUnit), WHOLE),
        ),
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;000081212;g;0;99999;0150;0087;mm;0000;4189050\x03",
            skip(bad(Field::Length), WHOLE),
        ),
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;000081212\x03",
            skip(
                FrameDecodeError::FieldCount {
                    got: 3,
                    min: 11,
                    max: 11,
                },
                WHOLE,
            ),
        ),
        (
            "sick-dws",
            b"\x020145;1;1;g;0;1;1;1;mm;0;1;extra\x03",
            skip(
                FrameDecodeError::FieldCount {
                    got: 12,
                    min: 11,
                    max: 11,
                },
                WHOLE,
            ),
        ),
        ("sick-dws", b"junk\x02", skip(FrameDecodeError::Garbage, 4)),
        ("sick-dws", b"junk", skip(FrameDecodeError::Garbage, 4)),
        (
            "sick-dws",
            b"\x020145;1JV\x020146",
            skip(FrameDecodeError::Truncated { available: 9 }, 9),
        ),
        (
            "sick-dws",
            b"\x02\r\n\x03",
            skip(FrameDecodeError::EmptyTelegram, WHOLE),
        ),
        (
            "sick-dws",
            &too_long,
            skip(FrameDecodeError::TelegramTooLong { max: 512 }, 514),
        ),
        (
            "sick-clv",
            b"\x02ABC;ST=x\x03",
            skip(bad(Field::ReadStatus), WHOLE),
        ),
        (
            "sick-clv",
            b"\x02ABC;status\x03",
            skip(bad(Field::ReadStatus), WHOLE),
        ),
        (
            "datalogic",
            nine_codes,
            skip(FrameDecodeError::TooManyBarcodes { count: 9 }, WHOLE),
        ),
        (
            "datalogic",
            b"junk\x021234\r\n",
            skip(FrameDecodeError::Garbage, 4),
        ),
        (
            "datalogic",
            b"\r\n",
            skip(FrameDecodeError::EmptyTelegram, WHOLE),
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(
            decode_text(&profile(name), input),
            resolve(expected, input),
            "{name} {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn incomplete_telegrams_need_more_until_the_limit() {
    let dws = profile("sick-dws");
    for end in 0..DWS.len() {
        assert_eq!(
            decode_text(&dws, &DWS[..end]),
            Decoded::NeedMore,
            "prefix {end}"
        );
    }
    let datalogic = profile("datalogic");
    for end in 0..DATALOGIC.len() - 1 {
        assert_eq!(
            decode_text(&datalogic, &DATALOGIC[..end]),
            Decoded::NeedMore,
            "prefix {end}"
        );
    }
    // STX plus exactly the maximum content still waits for the end byte.
    let mut at_limit = vec![0x02];
    at_limit.extend_from_slice(&[b'1'; 512]);
    assert_eq!(decode_text(&dws, &at_limit), Decoded::NeedMore);
}

#[test]
fn a_custom_profile_from_toml_decodes_destination_and_units() {
    let spec: TextProfileSpec = toml::from_str(
        r#"
        name = "hub-gateway"
        framing = "line-cr"
        field_separator = "|"
        code_separator = "/"
        fields = ["parcel_id", "barcodes", "destination", "weight", "ignore"]
        fields_min = 3
        no_read = ["NR"]
        telegram_bytes_max = 128
        "#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let profile = spec.validate().unwrap_or_else(|error| panic!("{error}"));
    let input = b"42|JD0146/NR/JD0147|330102001|1200\r";
    let expected = ScanFrame {
        destination: Some(b"330102001"),
        weight_g: 1200,
        flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::PARTIAL_READ),
        ..scan(42, &[b"JD0146", b"JD0147"])
    };
    assert_eq!(decode_text(&profile, input), frame(expected, input.len()));
    let short = b"42|JD0146|\r";
    assert_eq!(
        decode_text(&profile, short),
        frame(scan(42, &[b"JD0146"]), short.len())
    );
    let bad_destination = b"42|JD0146|\xff\xfe\r";
    assert_eq!(
        decode_text(&profile, bad_destination),
        skip(bad(Field::DestinationUtf8), bad_destination.len())
    );
}

#[test]
fn a_stream_of_telegrams_with_garbage_between_loses_none() {
    let dws = profile("sick-dws");
    let mut stream = b"noise".to_vec();
    stream.extend_from_slice(DWS);
    stream.extend_from_slice(b"\x02cut short");
    stream.extend_from_slice(DWS);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(DWS);
    let mut rest = stream.as_slice();
    let (mut frames, mut skipped) = (0, 0);
    loop {
        match decode_text(&dws, rest) {
            Decoded::Frame { consumed, .. } => {
                frames += 1;
                rest = &rest[consumed..];
            }
            Decoded::Skip { skip, .. } => {
                skipped += skip;
                rest = &rest[skip..];
            }
            Decoded::NeedMore => break,
        }
    }
    assert!(rest.is_empty());
    assert_eq!(frames, 3);
    assert_eq!(skipped, 5 + 10 + 2);
}
