//! The `store` suite: what encryption at rest costs on top of sled.
//!
//! Both sides write the same number of 300-byte values under 33-byte keys
//! (sled keys of the encrypted store are a keyspace byte and a 32-byte keyed
//! hash, so the raw side uses a keyspace byte and a 32-byte hash too), each
//! into its own fresh sled database with the same configuration. Samples of
//! the two sides are interleaved so drift in machine load hits both alike.
//! Nothing is flushed inside the timed loops: this measures the write path,
//! not the disk.

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_store::Keyspace;
use safemeet_store_sled::SledStore;
use serde_json::{Value, json};

use crate::median;

const VALUE_BYTES: usize = 300;
const BATCH: usize = 100;
/// The goal: encrypted put at most 1.5× raw sled put.
const PUT_RATIO_GOAL: f64 = 1.5;

fn raw_key(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(Keyspace::Timeline.id());
    k.extend_from_slice(blake3::hash(&i.to_le_bytes()).as_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    (0..VALUE_BYTES).map(|j| (i as usize + j) as u8).collect()
}

/// Runs `f` and returns nanoseconds per op.
fn timed(ops: usize, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = SystemClock.instant();
    f()?;
    Ok(SystemClock.instant().duration_since(start).as_nanos() as f64 / ops as f64)
}

pub(crate) fn run(samples: usize, ops: usize) -> anyhow::Result<Value> {
    let config = safemeet_store_sled::Config::default();
    let ks = Keyspace::Timeline;
    let (mut raw_put, mut enc_put, mut raw_get, mut enc_get, mut raw_batch, mut enc_batch) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // One warm-up round, then the measured samples.
    for round in 0..=samples {
        // Fresh databases each round, so every sample sees the same state
        // (a growing database would move from cache to disk mid-run).
        let dir = tempfile::tempdir()?;
        let raw_db = sled::Config::new()
            .path(dir.path().join("raw"))
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(Some(config.flush_every_ms))
            .open()?;
        let raw: sled::Tree = (*raw_db).clone();
        let enc = EncryptedStore::new(
            SledStore::open(dir.path().join("enc"), &config)?,
            StoreCipher::new(&DataKey::generate()),
        );
        let base = (round * ops) as u64;
        let ids: Vec<u64> = (base..base + ops as u64).collect();
        let values: Vec<Vec<u8>> = ids.iter().map(|i| value(*i)).collect();

        let rp = timed(ops, || {
            for (i, v) in ids.iter().zip(&values) {
                raw.insert(raw_key(*i), v.as_slice())?;
            }
            Ok(())
        })?;
        let ep = timed(ops, || {
            for (i, v) in ids.iter().zip(&values) {
                enc.put(ks, &i.to_le_bytes(), v)?;
            }
            Ok(())
        })?;
        // Reads of the keys just written, in a scrambled order.
        let order: Vec<u64> = (0..ops as u64)
            .map(|j| base + (j * 7919) % ops as u64)
            .collect();
        let rg = timed(ops, || {
            for i in &order {
                anyhow::ensure!(raw.get(raw_key(*i))?.is_some(), "raw value missing");
            }
            Ok(())
        })?;
        let eg = timed(ops, || {
            for i in &order {
                anyhow::ensure!(
                    enc.get(ks, &i.to_le_bytes())?.is_some(),
                    "encrypted value missing"
                );
            }
            Ok(())
        })?;
        // Batches of 100 fresh records.
        let bbase = 1_000_000_000 + base;
        let rb = timed(ops, || {
            for chunk in (bbase..bbase + ops as u64)
                .collect::<Vec<_>>()
                .chunks(BATCH)
            {
                let mut b = sled::Batch::default();
                for i in chunk {
                    b.insert(raw_key(*i), value(*i));
                }
                raw.apply_batch(b)?;
            }
            Ok(())
        })?;
        let eb = timed(ops, || {
            for chunk in (bbase..bbase + ops as u64)
                .collect::<Vec<_>>()
                .chunks(BATCH)
            {
                let mut b = enc.batch();
                for i in chunk {
                    enc.batch_put(&mut b, ks, &i.to_le_bytes(), &value(*i))?;
                }
                enc.apply(b)?;
            }
            Ok(())
        })?;
        drop((raw, raw_db, enc, dir));
        if round == 0 {
            continue;
        }
        eprintln!(
            "sample {round}/{samples}: put {rp:.0}/{ep:.0} ns  get {rg:.0}/{eg:.0} ns  batch {rb:.0}/{eb:.0} ns per record (raw/encrypted)"
        );
        raw_put.push(rp);
        enc_put.push(ep);
        raw_get.push(rg);
        enc_get.push(eg);
        raw_batch.push(rb);
        enc_batch.push(eb);
    }

    let pair = |raw: Vec<f64>, enc: Vec<f64>| {
        let (r, e) = (median(raw), median(enc));
        json!({ "raw_sled_ns": r.round(), "encrypted_ns": e.round(), "ratio": (e / r * 1000.0).round() / 1000.0 })
    };
    let put = pair(raw_put, enc_put);
    let put_ratio = put["ratio"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "suite": "store",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "value_bytes": VALUE_BYTES,
        "ops_per_sample": ops,
        "samples": samples,
        "median_ns_per_op": {
            "put": put,
            "get": pair(raw_get, enc_get),
            "batch_100_per_record": pair(raw_batch, enc_batch),
        },
        "goal": { "put_ratio_max": PUT_RATIO_GOAL, "met": put_ratio <= PUT_RATIO_GOAL },
    });
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}
