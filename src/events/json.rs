//! The one JSON rendering of a sort event, for the tools (`sortd events tail --json`,
//! `find`, `decode`) and for consumers that prefer JSON to the binary record.
//!
//! One object per event, keys in a fixed order; fields that do not apply are left out
//! (no `sent_us` unless sent, no weight unless measured). Bytes that are not UTF-8
//! (a binary barcode) appear as `{"hex": "..."}`. docs/events.md shows both kinds. This
//! module only renders; it reads nothing.

use serde::Serialize;

use super::record::{Event, Record};

/// A barcode or destination: text, or hex for bytes that are not UTF-8.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BytesJson<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// Anything else, as lowercase hex.
    Hex {
        /// The bytes in hex.
        hex: String,
    },
}

impl<'a> BytesJson<'a> {
    /// Text if `bytes` are UTF-8, else hex.
    pub fn of(bytes: &'a [u8]) -> BytesJson<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => BytesJson::Text(text),
            Err(_) => BytesJson::Hex {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }
}

/// The deciding plan.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PlanJson<'a> {
    /// Plan name.
    pub name: &'a str,
    /// Plan version.
    pub version: u32,
}

/// One event as JSON.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EventJson<'a> {
    /// `<sorter_id>:<seq>`, unique across the hub (when the sorter id is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Hub id (when known: from the segment header or the NATS subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<&'a str>,
    /// Sorter id (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sorter_id: Option<&'a str>,
    /// Journal sequence.
    pub seq: u64,
    /// `decision` or `outcome`.
    pub kind: &'static str,
    /// Parcel id.
    pub parcel_id: u64,
    /// Scanner id.
    pub scanner_id: u32,
    /// Decision: `sent`, `duplicate`, `undelivered`, `late`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// Outcome: `diverted`, `missed`, `aborted`, `lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Decision: the chute decided; outcome: the chute the PLC reports.
    pub chute: u16,
    /// Decision: why that chute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Decision: `exact`, `prefix`, `pre_advice`, `default` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// Decision: every barcode read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barcodes: Option<Vec<BytesJson<'a>>>,
    /// Decision: the destination code, if the scanner sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<BytesJson<'a>>,
    /// Decision: the deciding plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanJson<'a>>,
    /// Decision: the pre-advice update used, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_advice_seq: Option<u64>,
    /// PLC link sequence of the SORT (when sent / when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plc_seq: Option<u32>,
    /// Outcome: the decision event it confirms (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
    /// Decision: measured weight in grams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_g: Option<u32>,
    /// Decision: measured length, width, height in millimetres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions_mm: Option<[u16; 3]>,
    /// Decision: scan received, µs since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_us: Option<u64>,
    /// Decision: decided, µs since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_us: Option<u64>,
    /// Decision: SORT sent to the PLC, µs since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_us: Option<u64>,
    /// Outcome: SORT_CONFIRM received, µs since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_us: Option<u64>,
}

/// `<sorter_id>:<seq>`: the event id, unique across a hub, used as NATS `Nats-Msg-Id`
/// material.
pub fn event_id(sorter_id: &str, seq: u64) -> String {
    format!("{sorter_id}:{seq}")
}

impl<'a> EventJson<'a> {
    /// The JSON form of `record`; `ids` are (hub, sorter) when known.
    pub fn new(record: &Record<'a>, ids: Option<(&'a str, &'a str)>) -> EventJson<'a> {
        let mut json = EventJson {
            event_id: ids.map(|(_, sorter)| event_id(sorter, record.seq)),
            hub_id: ids.map(|(hub, _)| hub),
            sorter_id: ids.map(|(_, sorter)| sorter),
            seq: record.seq,
            kind: "decision",
            parcel_id: record.event.parcel_id(),
            scanner_id: record.event.scanner_id(),
            action: None,
            outcome: None,
            chute: 0,
            reason: None,
            rule: None,
            barcodes: None,
            destination: None,
            plan: None,
            pre_advice_seq: None,
            plc_seq: None,
            decision_seq: None,
            weight_g: None,
            dimensions_mm: None,
            received_us: None,
            decided_us: None,
            sent_us: None,
            confirmed_us: None,
        };
        match &record.event {
            Event::Decision(d) => {
                json.action = Some(d.action.as_str());
                json.chute = d.chute;
                json.reason = Some(d.reason.as_str());
                json.rule = Some(d.rule.as_str());
                json.barcodes = Some(d.barcodes.iter().map(|code| BytesJson::of(code)).collect());
                json.destination =
                    (!d.destination.is_empty()).then(|| BytesJson::of(d.destination));
                json.plan = Some(PlanJson {
                    name: d.plan_name,
                    version: d.plan_version,
                });
                json.pre_advice_seq = (d.pre_advice_seq != 0).then_some(d.pre_advice_seq);
                json.plc_seq = d.sent_us().map(|_| d.plc_seq);
                json.weight_g = d.weight_g();
                json.dimensions_mm = d.dimensions_mm();
                json.received_us = Some(d.received_us);
                json.decided_us = Some(d.decided_us());
                json.sent_us = d.sent_us();
            }
            Event::Outcome(o) => {
                json.kind = "outcome";
                json.outcome = Some(o.outcome.as_str());
                json.chute = o.chute;
                json.plc_seq = (o.plc_seq != 0).then_some(o.plc_seq);
                json.decision_seq = (o.decision_seq != 0).then_some(o.decision_seq);
                json.confirmed_us = Some(o.confirmed_us);
            }
        }
        json
    }
}

/// One JSON line (no newline) for `record`.
pub fn to_json_line(record: &Record<'_>, ids: Option<(&str, &str)>) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(&EventJson::new(record, ids)).unwrap_or_default()
}
