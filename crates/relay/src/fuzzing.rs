//! Entry points for the fuzz targets in `fuzz/` (not an API): the records
//! the relay reads back from its store, decoded from untrusted bytes the
//! way the store decodes them, and real encoded examples of each for the
//! fuzzers' seed corpus. The records are private to the store; this module
//! exposes their decoder and nothing else.

use safemeet_proto::Timestamp;
use safemeet_proto::mailbox::StoredEnvelope;

use crate::store::{self, ENVELOPE, MailboxMeta, TOTALS_RECORD, Totals};

/// Decodes `bytes` as each kind of relay store record. Never panics; the
/// results are thrown away.
pub fn stored_records(bytes: &[u8]) {
    let _ = store::decode::<StoredEnvelope>(bytes, ENVELOPE);
    let _ = store::decode_meta(bytes);
    let _ = store::decode::<Totals>(bytes, TOTALS_RECORD);
}

/// One encoded example of each relay store record, made with the real
/// encoder.
pub fn sample_records() -> Vec<Vec<u8>> {
    let Ok(ts) = Timestamp::from_millis(1_700_000_000_000) else {
        return Vec::new();
    };
    let encoded = [
        safemeet_proto::codec::encode(&StoredEnvelope {
            id: 7,
            stored_until: ts,
            envelope: vec![0x5a; 2100],
        }),
        safemeet_proto::codec::encode(&MailboxMeta {
            last_id: 7,
            count: 2,
            bytes: 4200,
            touched: ts,
            check: Some([3; 32]),
            opened: ts,
            fetched: true,
            intake_day: 19_675,
            intake: 4200,
        }),
        safemeet_proto::codec::encode(&Totals {
            envelopes: 2,
            bytes: 4200,
            mailboxes: 1,
        }),
    ];
    encoded.into_iter().filter_map(Result::ok).collect()
}
