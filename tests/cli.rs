//! End-to-end tests of the real `safemeet` binary: init, whoami, wrong
//! passphrase, double init, and what lands on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

const PASS: &str = "correct horse battery";

fn safemeet(home: &Path) -> Command {
    let mut c = Command::cargo_bin("safemeet").unwrap();
    c.arg("--home")
        .arg(home)
        .env_remove("SAFEMEET_PASSPHRASE")
        .env_remove("SAFEMEET_HOME");
    c
}

/// Runs `cmd` with the test passphrase, expects success, parses stdout as JSON.
fn run_json(mut cmd: Command) -> serde_json::Value {
    let out = cmd
        .env("SAFEMEET_PASSPHRASE", PASS)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

fn init(home: &Path, username: &str, display: &str) -> serde_json::Value {
    let mut cmd = safemeet(home);
    cmd.args([
        "init",
        "--username",
        username,
        "--display-name",
        display,
        "--email",
        "alice.l@example.org",
        "--json",
    ]);
    run_json(cmd)
}

fn whoami_json(home: &Path) -> serde_json::Value {
    let mut cmd = safemeet(home);
    cmd.args(["whoami", "--json"]);
    run_json(cmd)
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn init_then_whoami() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("alice");
    let created = init(&home, "alice", "Alice Liddell");
    let who = whoami_json(&home);
    for key in [
        "user_id",
        "device_id",
        "peer_id",
        "username",
        "display_name",
    ] {
        assert!(who[key].is_string(), "whoami --json lacks {key}: {who}");
        assert_eq!(
            who[key], created[key],
            "{key} changed between init and whoami"
        );
    }
    assert_eq!(who["username"], "alice");
    assert_eq!(who["display_name"], "Alice Liddell");
    assert!(who["user_id"].as_str().unwrap().starts_with("u_"));
    assert!(who["device_id"].as_str().unwrap().starts_with("d_"));
    assert!(who["peer_id"].as_str().unwrap().starts_with("12D3Koo"));

    // Human output; global flags after the subcommand; passphrase from a file.
    let pfile = tmp.path().join("pass");
    std::fs::write(&pfile, format!("{PASS}\n")).unwrap();
    Command::cargo_bin("safemeet")
        .unwrap()
        .env_remove("SAFEMEET_PASSPHRASE")
        .arg("whoami")
        .arg("--home")
        .arg(&home)
        .arg("--passphrase-file")
        .arg(&pfile)
        .assert()
        .success()
        .stdout(predicate::str::contains("display name: Alice Liddell"))
        .stdout(predicate::str::contains(who["user_id"].as_str().unwrap()));
}

#[test]
fn home_from_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("envhome");
    Command::cargo_bin("safemeet")
        .unwrap()
        .env("SAFEMEET_HOME", &home)
        .env("SAFEMEET_PASSPHRASE", PASS)
        .args(["init", "--username", "carol", "--json"])
        .assert()
        .success();
    assert!(home.join("keyfile").exists());
    let who = whoami_json(&home);
    assert_eq!(
        who["display_name"], "carol",
        "display name defaults to the username"
    );
}

#[test]
fn wrong_passphrase_fails_clearly_and_changes_nothing_but_the_note_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    init(&home, "alice", "Alice Liddell");
    let before = snapshot(&home);
    safemeet(&home)
        .args(["whoami"])
        .env("SAFEMEET_PASSPHRASE", "not the passphrase")
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("wrong passphrase"));
    safemeet(&home)
        .args(["whoami", "--json"])
        .env("SAFEMEET_PASSPHRASE", "not the passphrase")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("\"code\":\"wrong_passphrase\""));
    // Nothing changed but the note of each failure, for the security log
    // (sealed into it at the next unlock).
    let mut after = snapshot(&home);
    let pending = after.remove(&home.join("security.pending")).unwrap();
    let pending = String::from_utf8(pending).unwrap();
    assert_eq!(pending.lines().count(), 2, "{pending}");
    assert!(pending.lines().all(|l| l.starts_with("unlock_failed ")));
    assert_eq!(after, before, "a failed unlock modified the profile");
    // The right passphrase still works, and takes the notes in.
    whoami_json(&home);
    assert!(!home.join("security.pending").exists());
}

#[test]
fn double_init_is_refused_and_keeps_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let first = init(&home, "alice", "Alice Liddell");
    let before = snapshot(&home);
    safemeet(&home)
        .args(["init", "--username", "mallory"])
        .env("SAFEMEET_PASSPHRASE", "another passphrase")
        .assert()
        .code(5)
        .stderr(predicate::str::contains("already holds an account"));
    assert_eq!(snapshot(&home), before);
    assert_eq!(whoami_json(&home)["user_id"], first["user_id"]);
}

#[test]
fn profile_data_is_not_on_disk_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let created = init(&home, "alice", "Alice Liddell");
    let files = snapshot(&home);
    assert!(
        files.len() >= 2,
        "expected a key file and a store, got {:?}",
        files.keys()
    );
    let user_id = created["user_id"].as_str().unwrap().to_owned();
    for needle in [
        "alice",
        "Alice Liddell",
        "Liddell",
        "alice.l@example.org",
        &user_id,
    ] {
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} found in clear in {}",
                path.display()
            );
        }
    }
}

#[test]
fn helpful_errors_for_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    // No account yet.
    safemeet(&home)
        .args(["whoami"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("safemeet init"));
    // Invalid username: clap usage error naming the rule.
    safemeet(&home)
        .args(["init", "--username", "Not Valid"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("a-z, 0-9"));
    // Too short a passphrase for a new account.
    safemeet(&home)
        .args(["init", "--username", "alice"])
        .env("SAFEMEET_PASSPHRASE", "short")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at least 8"));
    // Long enough, and easy to guess: refused with zxcvbn's reason.
    safemeet(&home)
        .args(["init", "--username", "alice"])
        .env("SAFEMEET_PASSPHRASE", "password123")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("too easy to guess"));
    // No passphrase source and no terminal.
    safemeet(&home)
        .args(["init", "--username", "alice"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--passphrase-file"));
    // None of these created an account.
    assert!(!home.join("keyfile").exists());
}

#[test]
fn logs_hold_no_secrets_or_profile_data() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let mut stderr = Vec::new();
    for args in [
        &[
            "init",
            "--username",
            "zebulon",
            "--display-name",
            "Zebulon Quux",
            "--email",
            "zq@example.org",
        ][..],
        &["whoami"][..],
    ] {
        let out = safemeet(&home)
            .args(args)
            .env("SAFEMEET_PASSPHRASE", PASS)
            .env("SAFEMEET_LOG", "trace")
            .assert()
            .success()
            .get_output()
            .clone();
        stderr.extend_from_slice(&out.stderr);
    }
    let logs = String::from_utf8_lossy(&stderr);
    assert!(
        logs.contains("account created"),
        "trace logs are not being written: {logs}"
    );
    for needle in ["zebulon", "Zebulon Quux", "zq@example.org", PASS] {
        assert!(
            !logs.contains(needle),
            "{needle:?} appears in the logs:\n{logs}"
        );
    }
}

#[test]
fn concurrent_inits_leave_exactly_one_account() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let spawn = |name: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("safemeet"))
            .arg("--home")
            .arg(&home)
            .args(["init", "--username", name, "--json"])
            .env("SAFEMEET_PASSPHRASE", PASS)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("first"), spawn("second"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let winners: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|o| o.status.success())
        .collect();
    assert_eq!(winners.len(), 1, "a: {a:?}\nb: {b:?}");
    let loser = if a.status.success() { &b } else { &a };
    assert!(
        matches!(loser.status.code(), Some(5) | Some(6)),
        "the other init must fail as 'exists' or 'locked': {loser:?}"
    );
    let created: serde_json::Value = serde_json::from_slice(&winners[0].stdout).unwrap();
    assert_eq!(whoami_json(&home)["user_id"], created["user_id"]);
}

#[test]
fn init_recovers_from_an_interrupted_init() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    init(&home, "alice", "Alice Liddell");
    // Simulate an init that died before publishing its key file.
    std::fs::remove_file(home.join("keyfile")).unwrap();
    safemeet(&home)
        .args(["whoami"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .assert()
        .code(4);
    let again = init(&home, "alice", "Alice Liddell");
    assert_eq!(whoami_json(&home)["user_id"], again["user_id"]);
    let aside: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.orphaned-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the unreadable store is moved aside, not deleted"
    );
}

#[test]
fn bad_input_is_named_before_anything_is_asked_or_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // No account: said at once, no passphrase asked for (none is given,
    // and there is no terminal to ask on).
    for args in [
        vec!["whoami"],
        vec!["contact", "list"],
        vec!["audit"],
        vec!["daemon"],
    ] {
        safemeet(&a)
            .args(&args)
            .assert()
            .code(4)
            .stderr(predicate::str::contains("no account"));
    }
    init(&a, "alice", "Alice");
    init(&b, "bob", "Bob");
    let mut cmd = safemeet(&b);
    cmd.args(["invite", "--json"]);
    let invite = run_json(cmd)["invite"].as_str().unwrap().to_owned();
    let refused = |home: &Path, args: &[&str], says: &str| {
        safemeet(home)
            .args(args)
            .env("SAFEMEET_PASSPHRASE", PASS)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    };
    // An empty or invisible contact name.
    refused(
        &a,
        &["contact", "add", &invite, "--name", ""],
        "a contact's name",
    );
    refused(
        &a,
        &["contact", "add", &invite, "--name", " \t"],
        "a contact's name",
    );
    // A damaged invite (one character of its signed part changed) is bad
    // input, exit 2, whatever part broke.
    let mut damaged: Vec<char> = invite.chars().collect();
    let at = damaged.len() / 2;
    damaged[at] = if damaged[at] == 'a' { 'b' } else { 'a' };
    let damaged: String = damaged.into_iter().collect();
    refused(&a, &["contact", "add", &damaged], "invalid invite");
    // Empty messages, and room names that are no names.
    let mut cmd = safemeet(&a);
    cmd.args(["contact", "add", &invite, "--name", "bob", "--json"]);
    run_json(cmd);
    refused(&a, &["send", "bob", ""], "cannot be empty");
    refused(&a, &["send", "bob", "  \n "], "cannot be empty");
    refused(&a, &["room", "create", ""], "a room name");
    refused(&a, &["room", "create", "a\tb"], "a room name");
    // The version names the commit and the formats.
    safemeet(&a)
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains("commit").and(predicate::str::contains("protocols:")));
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let out = safemeet(&home)
        .args(["init", "--username", "alice"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .env("SAFEMEET_LOG", "info")
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("account created"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    init(&home, "alice", "Alice");
    // `safemeet invite | head -c 1`, with the reader gone before the
    // command writes (it unlocks the store first).
    for args in [
        &["invite"][..],
        &["whoami"],
        &["contact", "list", "--json"],
        &["completions", "bash"],
        &["man"],
        &["config", "default"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("safemeet"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .env("SAFEMEET_PASSPHRASE", PASS)
            .env_remove("SAFEMEET_HOME")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_message_can_come_from_standard_input_within_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a, "alice", "Alice");
    init(&b, "bob", "Bob");
    let mut cmd = safemeet(&b);
    cmd.args(["invite", "--json"]);
    let invite = run_json(cmd)["invite"].as_str().unwrap().to_owned();
    let mut cmd = safemeet(&a);
    cmd.args(["contact", "add", &invite, "--name", "bob", "--json"]);
    run_json(cmd);
    let mut cmd = safemeet(&a);
    cmd.args(["send", "bob", "-", "--json"])
        .write_stdin("line one\nline two\n");
    assert!(
        run_json(cmd)["event_id"]
            .as_str()
            .unwrap()
            .starts_with("e_")
    );
    let mut cmd = safemeet(&a);
    cmd.args(["messages", "bob", "--json"]);
    let listed = run_json(cmd);
    assert_eq!(listed[0]["text"], "line one\nline two", "{listed}");
    // Over 16 KiB: refused before anything is sent.
    safemeet(&a)
        .args(["send", "bob", "-"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .write_stdin("x".repeat(16 * 1024 + 1))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("16 KiB"));
}

/// `invite` on a terminal: the text, and a QR code no wider than 80
/// columns.
#[test]
fn an_invite_and_its_qr_code_fit_80_columns() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("alice");
    init(&home, "alice", "Alice");
    let out = safemeet(&home)
        .args(["invite", "--qr"])
        .env("SAFEMEET_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let art: Vec<&str> = text
        .lines()
        .filter(|l| l.chars().any(|c| ('▀'..='▟').contains(&c)))
        .collect();
    assert!(art.len() > 10, "a QR code is drawn: {text}");
    for line in &art {
        assert!(
            line.chars().count() <= 80,
            "{} columns",
            line.chars().count()
        );
    }
}

/// Completions for each shell and the manual pages come from the CLI's
/// definition: every command is in them.
#[test]
fn completions_and_manual_pages_name_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::cargo_bin("safemeet")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["up", "doctor", "send", "listen", "config"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    let out = Command::cargo_bin("safemeet")
        .unwrap()
        .args(["man", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for page in [
        "safemeet.1",
        "safemeet-up.1",
        "safemeet-doctor.1",
        "safemeet-send.1",
    ] {
        let text = std::fs::read_to_string(tmp.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a manual page");
    }
    let bad = Command::cargo_bin("safemeet")
        .unwrap()
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
