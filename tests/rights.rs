//! End-to-end tests of what a person may do with their own data, with real
//! `safemeet` processes on 127.0.0.1: correcting their profile (display
//! name, e-mail addresses), which reaches every contact; a readable export
//! of everything the node holds about them, with no key in it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;

use serde_json::Value;

mod support;

use support::contains;
use support::node::{
    Daemon, alice_and_bob, cli, cli_fails as failed, eventually, files_under, forms, init,
    secrets_of, store_dump,
};

/// Bob's view of Alice.
fn alice_at(bob: &Path) -> Value {
    let list = cli(bob, &["contact", "list"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alice")
        .unwrap()
        .clone()
}

#[test]
fn profile_edits_reach_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());

    let shown = cli(&alice, &["profile", "show"]);
    assert_eq!(shown["display_name"], "alice", "{shown}");
    assert_eq!(shown["version"], 1, "{shown}");

    let set = cli(
        &alice,
        &["profile", "set", "--display-name", "Alice Liddell"],
    );
    assert_eq!(set["display_name"], "Alice Liddell", "{set}");
    assert_eq!(set["version"], 2, "{set}");
    let added = cli(&alice, &["email", "add", "alice@example.org"]);
    assert_eq!(added["emails"][0], "alice@example.org", "{added}");
    assert_eq!(added["version"], 3, "{added}");
    eventually("bob to see the new name and address", || {
        let seen = alice_at(&bob);
        (seen["display_name"] == "Alice Liddell" && seen["emails"][0] == "alice@example.org")
            .then_some(())
    });
    // The daemon's whoami shows the profile as it is now.
    let who = cli(&alice, &["whoami"]);
    assert_eq!(who["display_name"], "Alice Liddell", "{who}");
    assert_eq!(who["emails"][0], "alice@example.org", "{who}");

    // Removed: gone at Bob's too.
    let removed = cli(&alice, &["email", "remove", "alice@example.org"]);
    assert_eq!(removed["emails"], serde_json::json!([]), "{removed}");
    eventually("bob to see the address gone", || {
        let seen = alice_at(&bob);
        (seen["emails"] == serde_json::json!([])).then_some(())
    });

    // Bad input: a usage error or a clear refusal, and no new version.
    let (code, _) = failed(&alice, &["email", "add", "not an address"]);
    assert_eq!(code, Some(2));
    let (_, said) = failed(&alice, &["email", "remove", "never@example.org"]);
    assert!(said.contains("not in your profile"), "{said}");
    let (code, _) = failed(&alice, &["profile", "set", "--display-name", ""]);
    assert_eq!(code, Some(2));
    assert_eq!(cli(&alice, &["profile", "show"])["version"], 4);
    da.stop();
    db.stop();
}

#[test]
fn a_readable_export_holds_every_message_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    cli(&bob, &["contact", "set", "alice", "--auto-accept-invites"]);
    cli(&alice, &["email", "add", "alice@example.org"]);

    let mut sent = Vec::new();
    for n in 0..25 {
        let (from, text) = if n % 2 == 0 {
            (&alice, format!("dm {n} *from* alice <b>"))
        } else {
            (&bob, format!("dm {n} from bob"))
        };
        let to = if n % 2 == 0 { "bob" } else { "alice" };
        cli(from, &["send", to, &text]);
        sent.push(text);
    }
    cli(&alice, &["room", "create", "team", "--member", "bob"]);
    for n in 0..5 {
        let text = format!("room {n} line one\nline two");
        cli(&alice, &["send", "team", &text]);
        sent.push(text);
    }
    eventually("every message on alice's device", || {
        let dm = support::node::texts(&alice, "bob");
        (dm.len() == 25).then_some(())
    });

    let out = dir.path().join("export");
    let done = cli(&alice, &["export", "--readable", out.to_str().unwrap()]);
    assert_eq!(done["messages"], 30, "{done}");
    assert_eq!(done["conversations"], 2, "{done}");
    // README, four JSON files, JSON and Markdown per conversation, and
    // the security log in both.
    assert_eq!(done["files"], 11, "{done}");

    // Every message, whole, in the JSON; each one's words in the Markdown.
    let files = files_under(&out);
    let mut texts = Vec::new();
    for (path, bytes) in &files {
        if path.extension().is_some_and(|e| e == "json")
            && path.parent().unwrap().ends_with("messages")
        {
            let list: Value = serde_json::from_slice(bytes).unwrap();
            for m in list.as_array().unwrap() {
                texts.push(m["text"].as_str().unwrap().to_owned());
            }
        }
    }
    texts.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(texts, expected);
    let markdown: String = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "md"))
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert!(markdown.contains("dm 3 from bob"), "{markdown}");
    assert!(
        markdown.contains("dm 4 \\*from\\* alice \\<b\\>"),
        "{markdown}"
    );
    assert!(markdown.contains("alice@example.org"), "{markdown}");
    let profile: Value = serde_json::from_slice(
        &files
            .iter()
            .find(|(p, _)| p.ends_with("profile.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(profile["emails"][0], "alice@example.org");
    // The security log, checked: the account's creation and the profile
    // change, and nothing of any message.
    let log: Value = serde_json::from_slice(
        &files
            .iter()
            .find(|(p, _)| p.ends_with("security-log.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(log["chain"], "unchanged", "{log}");
    let events: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"account_created"), "{log}");
    assert!(events.contains(&"profile_changed"), "{log}");
    assert_eq!(done["security_entries"], events.len(), "{done}");
    assert!(!log.to_string().contains("dm "), "{log}");
    assert!(markdown.contains("# Security log"), "{markdown}");

    // A second export into the same directory is refused.
    let (_, said) = failed(&alice, &["export", "--readable", out.to_str().unwrap()]);
    assert!(said.contains("not empty"), "{said}");
    da.stop();
    db.stop();

    // No key, in any form, in any file.
    let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    for secret in secrets_of(&alice) {
        for form in forms(&secret) {
            assert!(!contains(&all, &form), "a key is in the export");
        }
    }
}

#[test]
fn the_security_log_records_what_happened_and_shows_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    // A wrong passphrase: refused, and noted for the log.
    let out = support::node::bin()
        .arg("--home")
        .arg(&alice)
        .env("SAFEMEET_PASSPHRASE", "not the passphrase")
        .args(["whoami", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let pending = cli(&alice, &["audit"]);
    assert_eq!(pending[1]["event"], "unlock_failed", "{pending}");
    assert!(pending[1]["seq"].is_null(), "not sealed yet: {pending}");

    // The daemon's unlock seals it; then a link, a revocation, a profile
    // change and an export, each recorded.
    let da = Daemon::start(&alice);
    let shown = cli(&alice, &["device", "link"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice2 = dir.path().join("alice2");
    let linked = cli(&alice2, &["init", "--link", &shown]);
    let second = linked["device_id"].as_str().unwrap().to_owned();
    cli(&alice, &["device", "revoke", &second]);
    cli(&alice, &["profile", "set", "--display-name", "Alice L"]);
    let out = dir.path().join("export");
    cli(&alice, &["export", "--readable", out.to_str().unwrap()]);

    let log = cli(&alice, &["audit"]);
    let events: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "account_created",
            "unlock_failed",
            "device_linked",
            "device_revoked",
            "profile_changed",
            "export_readable"
        ],
        "{log}"
    );
    let seqs: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(log[2]["subject"], second.as_str());
    assert_eq!(log[3]["subject"], second.as_str());
    // `--since` filters by time.
    let later = cli(&alice, &["audit", "--since", &log[5]["at"].to_string()]);
    assert_eq!(
        later.as_array().unwrap().last().unwrap()["event"],
        "export_readable"
    );
    // The new device has its own log.
    let theirs = cli(&alice2, &["audit"]);
    assert_eq!(theirs[0]["event"], "device_linked_to_account", "{theirs}");
    let verified = cli(&alice, &["audit", "verify"]);
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["entries"], 6);
    da.stop();

    // One byte changed in the middle of the second line: `audit verify`
    // fails and names the line; so does a line removed.
    let path = alice.join("security.log");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let mut bytes = original.clone().into_bytes();
    let at = lines[0].len() + 1 + lines[1].len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &bytes).unwrap();
    let (code, said) = failed(&alice, &["audit", "verify"]);
    assert_eq!(code, Some(1));
    assert!(said.contains("line 2"), "{said}");
    let removed: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&path, removed).unwrap();
    let (code, said) = failed(&alice, &["audit", "verify"]);
    assert_eq!(code, Some(1));
    assert!(said.contains("line 4"), "{said}");
    // A long junk line slipped in: named too, and nothing after it is
    // taken as checked.
    let mut junk = lines.clone();
    let long = "A".repeat(10_000);
    junk.insert(2, &long);
    let junk: String = junk.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, junk).unwrap();
    let (code, said) = failed(&alice, &["audit", "verify"]);
    assert_eq!(code, Some(1));
    assert!(said.contains("line 3"), "{said}");
    // Put back, it verifies again.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(cli(&alice, &["audit", "verify"])["ok"], true);
}

/// Bob's list of Alice's active devices.
fn alice_devices_at(bob: &Path) -> Vec<String> {
    alice_at(bob)["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_archive_moves_the_account_to_a_new_device_and_retires_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    for n in 0..3 {
        cli(&alice, &["send", "bob", &format!("before the move {n}")]);
        cli(&bob, &["send", "alice", &format!("reply {n}")]);
    }
    eventually("alice to have the whole conversation", || {
        (support::node::texts(&alice, "bob").len() == 6).then_some(())
    });

    let file = dir.path().join("alice.safemeet");
    let path = file.to_str().unwrap();
    let done = cli(&alice, &["export", path]);
    assert_eq!(done["messages"], 6, "{done}");
    assert_eq!(done["contacts"], 1, "{done}");
    let old = done["exported_from"].as_str().unwrap().to_owned();
    let new = done["device_id"].as_str().unwrap().to_owned();
    let user = done["user_id"].as_str().unwrap().to_owned();
    let sealed = std::fs::read(&file).unwrap();
    assert_eq!(done["bytes"], sealed.len(), "{done}");
    assert!(sealed.starts_with(b"SAFEMEET-ARCHIVE"));
    assert!(!contains(&sealed, b"before the move"), "no plaintext");
    // Not over a file that exists.
    let (code, said) = failed(&alice, &["export", path]);
    assert_eq!(code, Some(2), "{said}");
    // Bob is told of the device the archive becomes at once.
    eventually("bob to list the new device", || {
        alice_devices_at(&bob).contains(&new).then_some(())
    });

    // The wrong passphrase, another file, this very home: refused, and
    // nothing is left behind.
    let alice2 = dir.path().join("alice2");
    let wrong = support::node::bin()
        .env("SAFEMEET_PASSPHRASE", "not the right one at all")
        .args(["--home", alice2.to_str().unwrap(), "import", path, "--json"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3), "{wrong:?}");
    assert!(!alice2.join("keyfile").exists());
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"PK\x03\x04 not an archive").unwrap();
    let (code, said) = failed(&alice2, &["import", junk.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a SafeMeet archive"), "{said}");
    let (code, said) = failed(&alice, &["import", path]);
    assert_eq!(code, Some(5), "{said}");

    let imported = cli(
        &alice2,
        &[
            "import",
            path,
            "--retire-old",
            "--device-name",
            "new laptop",
        ],
    );
    assert_eq!(imported["user_id"], user.as_str(), "{imported}");
    assert_eq!(imported["device_id"], new.as_str(), "{imported}");
    assert_eq!(imported["retired"], true, "{imported}");
    assert_eq!(imported["messages"], 6, "{imported}");
    // Twice: refused.
    let (code, said) = failed(&alice2, &["import", path]);
    assert_eq!(code, Some(5), "{said}");
    assert!(said.contains("imported once"), "{said}");

    let d2 = Daemon::start(&alice2);
    // The history came along.
    let history = support::node::texts(&alice2, "bob");
    for n in 0..3 {
        assert!(
            history.contains(&format!("before the move {n}")),
            "{history:?}"
        );
        assert!(history.contains(&format!("reply {n}")), "{history:?}");
    }
    // Bob learns that the old device is revoked, from the new one.
    eventually("bob to drop the old device", || {
        let devices = alice_devices_at(&bob);
        (!devices.contains(&old) && devices.contains(&new)).then_some(())
    });
    let listed = cli(&alice2, &["device", "list"]);
    let old_entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == old.as_str())
        .unwrap()
        .clone();
    assert!(old_entry["revoked_at"].is_u64(), "{listed}");
    // Bob's next DM reaches the new device, and not the old one (which
    // still runs).
    cli(&bob, &["send", "alice", "after the move"]);
    eventually("the new device to get bob's DM", || {
        support::node::texts(&alice2, "bob")
            .contains(&"after the move".to_owned())
            .then_some(())
    });
    cli(&alice2, &["send", "bob", "from the new device"]);
    eventually("bob to get it", || {
        support::node::texts(&bob, "alice")
            .contains(&"from the new device".to_owned())
            .then_some(())
    });
    assert!(
        !support::node::texts(&alice, "bob").contains(&"after the move".to_owned()),
        "the old device got a message after it was retired"
    );
    // The security log says so.
    let audit = cli(&alice2, &["audit"]);
    let events: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"account_imported"), "{audit}");
    assert!(events.contains(&"device_revoked"), "{audit}");
    d2.stop();
    da.stop();
    db.stop();
    // The old store never held what came after.
    assert!(
        !store_dump(&alice)
            .iter()
            .any(|r| contains(&r.value, b"after the move"))
    );
}

/// A PNG: a header, `extra` text chunks (metadata), and `pixels` bytes of
/// image data.
fn png(extra: &[&[u8]], pixels: usize) -> Vec<u8> {
    let chunk = |kind: &[u8; 4], data: &[u8]| {
        let mut c = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]);
        c
    };
    let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
    p.extend(chunk(b"IHDR", &[0, 0, 0, 8, 0, 0, 0, 8, 8, 2, 0, 0, 0]));
    for e in extra {
        p.extend(chunk(b"tEXt", e));
    }
    p.extend(chunk(b"IDAT", &vec![7; pixels]));
    p.extend(chunk(b"IEND", &[]));
    p
}

#[test]
fn an_avatar_reaches_contacts_without_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let photo = dir.path().join("me.png");
    std::fs::write(
        &photo,
        png(
            &[
                b"GPS\0secret-location 48.8566,2.3522",
                b"Camera\0serial 0042",
            ],
            2000,
        ),
    )
    .unwrap();
    let set = cli(
        &alice,
        &["profile", "set", "--avatar", photo.to_str().unwrap()],
    );
    let mine = set["avatar"].clone();
    assert_eq!(mine["media_type"], "image/png", "{set}");
    assert_eq!(mine["bytes"], png(&[], 2000).len(), "stripped: {set}");
    assert_eq!(cli(&alice, &["profile", "show"])["avatar"], mine);
    eventually("bob to get the avatar", || {
        (alice_at(&bob)["avatar"] == mine).then_some(())
    });

    // Not an image, too large once stripped, nothing to change: refused.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"just words").unwrap();
    let (code, said) = failed(
        &alice,
        &["profile", "set", "--avatar", text.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a PNG or JPEG"), "{said}");
    let big = dir.path().join("big.png");
    std::fs::write(&big, png(&[], 60 * 1024)).unwrap();
    let (code, said) = failed(
        &alice,
        &["profile", "set", "--avatar", big.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("smaller"), "{said}");
    let (code, _) = failed(&alice, &["profile", "set"]);
    assert_eq!(code, Some(2));

    // In the readable export, as it is.
    let out = dir.path().join("export");
    cli(&alice, &["export", "--readable", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("avatar.png")).unwrap(),
        png(&[], 2000)
    );

    // Removed: gone at Bob's too.
    let removed = cli(&alice, &["profile", "set", "--remove-avatar"]);
    assert!(removed["avatar"].is_null(), "{removed}");
    eventually("bob to see the avatar gone", || {
        alice_at(&bob)["avatar"].is_null().then_some(())
    });
    da.stop();
    db.stop();
    for home in [&alice, &bob] {
        assert!(
            !store_dump(home)
                .iter()
                .any(|r| contains(&r.value, b"secret-location")
                    || contains(&r.value, b"serial 0042")),
            "metadata in {}",
            home.display()
        );
    }
}
