//! The committed corpus, replayed through every target without libFuzzer:
//! each input that ever crashed a target stays here as a regression test.
//! With `SAFEMEET_FUZZ_WRITE_SEEDS=1` the test first writes the seeds of
//! `safemeet_fuzz::seeds` into the corpus (named by a hash of their bytes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};

use safemeet_fuzz::{TARGETS, seeds};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn write_seeds(target: &str) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    for seed in seeds::for_target(target) {
        let name = seed_name(&seed);
        std::fs::write(dir.join(name), seed).unwrap();
    }
}

fn seed_name(bytes: &[u8]) -> String {
    // The file name only has to be stable and distinct: a short FNV-1a
    // hash does (libFuzzer names its finds by SHA-1; both live side by side).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("seed-{h:016x}")
}

#[test]
fn every_target_has_seeds_and_survives_its_corpus() {
    let write = std::env::var_os("SAFEMEET_FUZZ_WRITE_SEEDS").is_some();
    for target in TARGETS {
        if write {
            write_seeds(target.name);
        }
        let seeds = seeds::for_target(target.name);
        assert!(!seeds.is_empty(), "{}: no seeds", target.name);
        for seed in &seeds {
            (target.run)(seed);
        }
        let files: Vec<_> = std::fs::read_dir(corpus(target.name))
            .unwrap_or_else(|e| panic!("{}: no corpus ({e})", target.name))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "{}: empty corpus", target.name);
        for file in files {
            (target.run)(&std::fs::read(&file).unwrap());
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    for target in TARGETS {
        let path = dir.join(format!("{}.rs", target.name));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("safemeet_fuzz::{}(data)", target.name)),
            "{} does not run its target",
            path.display()
        );
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), TARGETS.len());
}

#[test]
fn the_seeds_pass_the_checks_they_are_meant_to_start_past() {
    // Seeds that fail early would leave the fuzzers at the decoders' doors.
    use safemeet_proto::{Envelope, invite::Invite};
    let frames = seeds::for_target("frame");
    assert_eq!(
        frames
            .iter()
            .filter(|f| Envelope::from_frame(f).is_ok())
            .count(),
        3
    );
    for line in seeds::for_target("jsonrpc") {
        let line = String::from_utf8(line).unwrap();
        assert!(safemeet_api::fuzz_request_line(&line).is_ok(), "{line}");
    }
    let invite = seeds::for_target("invite").pop().unwrap();
    Invite::from_text(std::str::from_utf8(&invite).unwrap()).unwrap();
    let account = seeds::account();
    safemeet_crypto::certificate::verify_device_certificate(
        account.certificate(),
        &account.user_id(),
    )
    .unwrap();
    for text in seeds::for_target("relay_config") {
        safemeet_relay::FileConfig::from_toml(std::str::from_utf8(&text).unwrap()).unwrap();
    }
    for record in seeds::for_target("crypto_records") {
        // Each decodes as one of the machine's records, the account or the key file.
        let ok = safemeet_crypto::account::Account::from_record(&record).is_ok()
            || std::str::from_utf8(&record)
                .is_ok_and(|t| safemeet_crypto::at_rest::KeyFile::from_json(t).is_ok())
            || record.first() == Some(&1);
        assert!(ok);
    }
}
