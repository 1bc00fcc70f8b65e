//! Running `safemeet` commands and daemons in tests: each command with
//! `--json` and the test passphrase, each daemon on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub(crate) const PASS: &str = "correct horse battery staple";
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safemeet"));
    c.env("SAFEMEET_PASSPHRASE", PASS)
        .env_remove("SAFEMEET_HOME")
        .env_remove("SAFEMEET_LOG");
    c
}

/// Runs a command with `--json`, expects success, parses what it prints.
pub(crate) fn cli(home: &Path, args: &[&str]) -> Value {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "safemeet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs a command with `--json` that must fail: its exit code and what it
/// said on stderr.
pub(crate) fn cli_fails(home: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(!out.status.success(), "safemeet {args:?} succeeded");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn init(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    cli(&home, &["init", "--username", name]);
    home
}

pub(crate) fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let interval = Duration::from_millis(100);
    for _ in 0..(WAIT.as_millis() / interval.as_millis()) {
        if let Some(v) = check() {
            return v;
        }
        std::thread::park_timeout(interval);
    }
    panic!("timed out waiting for {what}")
}

/// `a` (called `a_name` at `b`) and `b` (called `b_name` at `a`) add
/// each other.
pub(crate) fn befriend(a: &Path, a_name: &str, b: &Path, b_name: &str) {
    let ia = cli(a, &["invite"])["invite"].as_str().unwrap().to_owned();
    let ib = cli(b, &["invite"])["invite"].as_str().unwrap().to_owned();
    cli(a, &["contact", "add", &ib, "--name", b_name]);
    cli(b, &["contact", "add", &ia, "--name", a_name]);
}

/// Alice and Bob, each with a daemon, contacts of each other (as "alice"
/// and "bob").
pub(crate) fn alice_and_bob(dir: &Path) -> (PathBuf, PathBuf, Daemon, Daemon) {
    alice_and_bob_on(dir, "/ip4/127.0.0.1/tcp/0")
}

/// As [`alice_and_bob`], each daemon listening on `listen` only.
pub(crate) fn alice_and_bob_on(dir: &Path, listen: &str) -> (PathBuf, PathBuf, Daemon, Daemon) {
    let (alice, bob) = (init(dir, "alice"), init(dir, "bob"));
    let (da, db) = (
        Daemon::start_on(&alice, listen),
        Daemon::start_on(&bob, listen),
    );
    let invite = |home: &Path| {
        cli(home, &["invite"])["invite"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ia, ib) = (invite(&alice), invite(&bob));
    cli(&alice, &["contact", "add", &ib, "--name", "bob"]);
    cli(&bob, &["contact", "add", &ia, "--name", "alice"]);
    (alice, bob, da, db)
}

/// A daemon on 127.0.0.1; killed when dropped.
pub(crate) struct Daemon {
    pub(crate) process: super::Reaped,
    /// The web app's address (`http://127.0.0.1:PORT/`), if it serves one.
    pub(crate) web: Option<String>,
}

impl Daemon {
    pub(crate) fn start(home: &Path) -> Self {
        Self::start_on(home, "/ip4/127.0.0.1/tcp/0")
    }

    pub(crate) fn start_on(home: &Path, listen: &str) -> Self {
        Self::start_with(home, listen, &[])
    }

    /// With more `daemon` arguments (`--relay ADDR`). The web app gets a
    /// free port unless `--web` is among them.
    pub(crate) fn start_with(home: &Path, listen: &str, extra: &[&str]) -> Self {
        let web: &[&str] = if extra.contains(&"--web") {
            &[]
        } else {
            &["--web", "127.0.0.1:0"]
        };
        let mut child = bin()
            .arg("--home")
            .arg(home)
            .args(["daemon", "--listen", listen, "--no-mdns", "--json"])
            .args(web)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let process = super::Reaped::new(child);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("the daemon started");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(!v["listen_addrs"].as_array().unwrap().is_empty(), "{v}");
        let web = v["web"].as_str().map(str::to_owned);
        Self { process, web }
    }

    pub(crate) fn stop(mut self) {
        self.process.signal("TERM");
        assert!(self.process.wait().success());
    }
}

/// Where a daemon listens on TCP, without its `/p2p/` part (to start it
/// again there: its contacts know that address from its invite).
pub(crate) fn own_tcp_addr(home: &Path) -> String {
    // Not a relay circuit's address: its first part is the relay's.
    cli(home, &["whoami"])["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| !a.contains("/p2p-circuit"))
        .and_then(|a| a.split("/p2p/").next())
        .unwrap()
        .to_owned()
}

pub(crate) fn user_id(home: &Path) -> String {
    cli(home, &["whoami"])["user_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn texts(home: &Path, target: &str) -> Vec<String> {
    cli(home, &["messages", target])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Every record of a stopped node's store, opened through the store API
/// with the test passphrase: keyspace, hashed key and plaintext.
pub(crate) fn store_dump(home: &Path) -> Vec<safemeet_crypto::DumpedRecord> {
    use safemeet_crypto::at_rest::{KeyFile, Passphrase, StoreCipher};
    let text = std::fs::read_to_string(home.join("keyfile")).unwrap();
    let key = KeyFile::from_json(&text)
        .unwrap()
        .unwrap_key(&Passphrase::new(PASS))
        .unwrap();
    let sled = safemeet_store_sled::SledStore::open(home.join("db"), &Default::default()).unwrap();
    safemeet_crypto::EncryptedStore::new(sled, StoreCipher::new(&key))
        .dump()
        .unwrap()
}

/// Every file under `dir`, with its path.
pub(crate) fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

/// The secrets of a stopped node: its data key, master key, mailbox key
/// and libp2p key, each as raw bytes.
pub(crate) fn secrets_of(home: &Path) -> Vec<Vec<u8>> {
    use safemeet_crypto::account::Account;
    use safemeet_crypto::at_rest::{KeyFile, Passphrase};
    let text = std::fs::read_to_string(home.join("keyfile")).unwrap();
    let key = KeyFile::from_json(&text)
        .unwrap()
        .unwrap_key(&Passphrase::new(PASS))
        .unwrap();
    let record = store_dump(home)
        .into_iter()
        .find(|r| r.keyspace == safemeet_store::Keyspace::Account)
        .unwrap();
    let account = Account::from_record(&record.value).unwrap();
    let keys = account.device_keys();
    let libp2p = keys.libp2p.clone().try_into_ed25519().unwrap();
    vec![
        key.expose().to_vec(),
        account.master_secret().unwrap().to_vec(),
        keys.mailbox.to_bytes().to_vec(),
        libp2p.secret().as_ref().to_vec(),
    ]
}

/// `secret` as raw bytes and in the text forms a key would take.
pub(crate) fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD, HEXLOWER};
    vec![
        secret.to_vec(),
        HEXLOWER.encode(secret).into_bytes(),
        BASE64.encode(secret).into_bytes(),
        BASE64URL_NOPAD.encode(secret).into_bytes(),
        BASE32_NOPAD.encode(secret).to_lowercase().into_bytes(),
    ]
}

/// The lines a child process writes on stdout, as they come.
pub(crate) fn lines_of(
    stdout: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(256);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
