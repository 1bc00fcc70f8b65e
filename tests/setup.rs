//! First run and settings, with the real binary: `safemeet up` run twice,
//! config.toml and the order flags, environment, file and defaults are
//! taken in, and the addresses a daemon remembers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

mod support;

use support::http::{authority, request};
use support::node::{WAIT, bin, cli, cli_fails, init};

/// A started command's stdout lines, as JSON, one by one.
struct Running {
    process: support::Reaped,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut with_home = vec!["--home", home.to_str().unwrap()];
        with_home.extend(args);
        Self::start_args(&with_home, env)
    }

    fn start_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = bin();
        command
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::sync_channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            process: support::Reaped::new(child),
            lines,
        }
    }

    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(WAIT).expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn stop(mut self) {
        self.process.signal("TERM");
        assert!(self.process.wait().success(), "a clean stop");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const QUIET: [&str; 4] = ["--no-mdns", "--web", "127.0.0.1:0", "--listen"];

/// `up` in an empty home creates the account and starts; run again it
/// only starts, with the same account; the web app answers both times.
#[test]
fn up_creates_an_account_once_and_starts_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("carol");
    let mut args = vec!["up", "--username", "carol"];
    args.extend(QUIET);
    args.push("/ip4/127.0.0.1/tcp/0");

    let first = Running::start(&home, &args, &[]);
    let created = first.next();
    assert_eq!(created["created"]["username"], "carol", "{created}");
    let user_id = created["created"]["user_id"].as_str().unwrap().to_owned();
    let started = first.next();
    let web = authority(started["web"].as_str().unwrap());
    assert_eq!(request(&web, "GET", "/api/v1/check", &[], b"").status, 200);
    first.stop();

    // Again, even with --username: the account is there, it just starts.
    let second = Running::start(&home, &args, &[]);
    let started = second.next();
    assert!(started.get("created").is_none(), "{started}");
    let web = authority(started["web"].as_str().unwrap());
    assert_eq!(request(&web, "GET", "/api/v1/check", &[], b"").status, 200);
    assert_eq!(cli(&home, &["whoami"])["user_id"], user_id.as_str());
    second.stop();

    // With no account and no terminal to ask on, it says what it needs.
    let empty = dir.path().join("nobody");
    let (code, err) = cli_fails(&empty, &["up", "--no-mdns", "--web", "off"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--username"), "{err}");
    assert!(!empty.join("keyfile").exists());
}

/// Flags over the environment over config.toml over the defaults, seen
/// in where the daemon listens; and a bad file is refused naming the keys.
#[test]
fn settings_come_from_flags_then_environment_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let home = init(dir.path(), "alice");
    let [file_port, env_port, flag_port] = [free_port(), free_port(), free_port()];
    let tcp = |port: u16| format!("/ip4/127.0.0.1/tcp/{port}");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "listen = [\"{}\"]\nmdns = false\nweb = \"127.0.0.1:0\"\n",
            tcp(file_port)
        ),
    )
    .unwrap();

    let shown = cli(&home, &["config", "show"]);
    assert_eq!(shown["settings"]["listen"][0], tcp(file_port), "{shown}");
    assert_eq!(shown["settings"]["mdns"], false);
    assert_eq!(shown["settings"]["relay"], serde_json::json!([]), "default");

    let listens_on = |running: &Running, port: u16| {
        let line = running.next();
        let addrs = line["listen_addrs"].as_array().unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.as_str().unwrap().contains(&format!("/tcp/{port}/"))),
            "listens on {port}: {line}"
        );
    };
    let from_file = Running::start(&home, &["daemon"], &[]);
    listens_on(&from_file, file_port);
    from_file.stop();

    let env = [("SAFEMEET_LISTEN", tcp(env_port))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let from_env = Running::start(&home, &["daemon"], &env);
    listens_on(&from_env, env_port);
    from_env.stop();

    let flag = tcp(flag_port);
    let from_flag = Running::start(&home, &["daemon", "--listen", &flag], &env);
    listens_on(&from_flag, flag_port);
    from_flag.stop();
    // The flag was remembered: the file now says so.
    let shown = cli(&home, &["config", "show"]);
    assert_eq!(shown["settings"]["listen"][0], flag, "{shown}");
    let text = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(text.contains("mdns = false"), "other keys kept: {text}");

    // An unknown key stops every command that reads the file, exit 2.
    std::fs::write(home.join("config.toml"), "lisen = []\n").unwrap();
    for args in [&["config", "show"][..], &["daemon"][..]] {
        let (code, err) = cli_fails(&home, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("unknown key `lisen`"), "{err}");
        assert!(err.contains("listen, bootstrap, relay, web, mdns"), "{err}");
    }
    // `config default` is a valid file.
    let default = bin().args(["config", "default"]).output().unwrap();
    std::fs::write(home.join("config.toml"), &default.stdout).unwrap();
    cli(&home, &["config", "show"]);
}

/// `--relay` and `--bootstrap` given once are used on the next start
/// without them: a restart does not quietly drop the relay contacts reach
/// this device through.
#[test]
fn a_daemon_remembers_its_relay_and_bootstrap_peers() {
    let dir = tempfile::tempdir().unwrap();
    let relay = support::Relay::start(&dir.path().join("relay"), &[]);
    let home = init(dir.path(), "alice");
    let relay_addr = relay.addr.to_string();
    let mut args = vec!["daemon", "--relay", &relay_addr, "--bootstrap", &relay_addr];
    args.extend(QUIET);
    args.push("/ip4/127.0.0.1/tcp/0");
    let first = Running::start(&home, &args, &[]);
    first.next();
    first.stop();

    let again = Running::start(
        &home,
        &["daemon", "--web", "off"],
        &[("SAFEMEET_MDNS", "false")],
    );
    again.next();
    // Its invite names the relay still.
    support::node::eventually("the relay in the invite again", || {
        let who = cli(&home, &["whoami"]);
        who["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("/p2p-circuit"))
            .then_some(())
    });
    let shown = cli(&home, &["config", "show"]);
    assert_eq!(
        shown["settings"]["relay"][0],
        relay_addr.as_str(),
        "{shown}"
    );
    assert_eq!(
        shown["settings"]["bootstrap"][0],
        relay_addr.as_str(),
        "{shown}"
    );
    again.stop();
    relay.stop();
}

/// A relay nobody answers at: the daemon runs, and warns naming it.
#[test]
fn an_unreachable_relay_is_warned_of_by_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let home = init(dir.path(), "alice");
    // A port nothing listens on, and a peer id nobody has.
    let port = free_port();
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let relay = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}");
    let mut child = bin()
        .arg("--home")
        .arg(&home)
        .args(["daemon", "--relay", &relay, "--json"])
        .args(QUIET)
        .arg("/ip4/127.0.0.1/tcp/0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _stdout = child.stdout.take().unwrap();
    let mut process = support::Reaped::new(child);
    let lines = support::node::lines_of(stderr);
    let warned = loop {
        let line = lines.recv_timeout(WAIT).expect("a warning about the relay");
        if line.contains("WARN") && line.contains(&relay) {
            break line;
        }
    };
    assert!(warned.contains("cannot be reached"), "{warned}");
    process.signal("TERM");
    assert!(process.wait().success());
}

/// `doctor --json` as a map from check to its verdict, and whether it
/// exited 0.
fn doctor(home: &Path) -> (bool, std::collections::HashMap<String, String>) {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["ok"],
        out.status.success(),
        "exit status and verdict agree: {v}"
    );
    let verdicts = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["check"].as_str().unwrap();
            // One key per kind of check: "relay", not each relay's address.
            let kind = name.split(' ').next().unwrap().to_owned();
            (kind, c["verdict"].as_str().unwrap().to_owned())
        })
        .collect();
    (out.status.success(), verdicts)
}

/// `doctor` on a healthy home (daemon up, relay holding its reservation),
/// then with the relay down (with the daemon, then without it and with a
/// listen port taken): each verdict says what is wrong.
#[test]
fn doctor_tells_a_healthy_home_from_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let relay = support::Relay::start(&dir.path().join("relay"), &[]);
    let home = init(dir.path(), "alice");
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let relay_addr = relay.addr.to_string();
    let daemon = Running::start(
        &home,
        &[
            "daemon",
            "--relay",
            &relay_addr,
            "--listen",
            &listen,
            "--no-mdns",
            "--web",
            "off",
        ],
        &[],
    );
    daemon.next();
    let verdicts = support::node::eventually("a healthy verdict", || {
        let (ok, verdicts) = doctor(&home);
        (ok && verdicts["relay"] == "ok").then_some(verdicts)
    });
    for kind in ["account", "config", "daemon", "store", "ports", "disk"] {
        assert_eq!(verdicts[kind], "ok", "{kind}: {verdicts:?}");
    }
    assert!(
        ["ok", "skip"].contains(&verdicts["nat"].as_str()),
        "{verdicts:?}"
    );

    relay.stop();
    let verdicts = support::node::eventually("the relay's loss to show", || {
        let (ok, verdicts) = doctor(&home);
        (!ok && verdicts["relay"] == "fail").then_some(verdicts)
    });
    assert_eq!(verdicts["daemon"], "ok", "{verdicts:?}");
    daemon.stop();

    // No daemon, the relay still down, its port taken by another program.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (ok, verdicts) = doctor(&home);
    assert!(!ok);
    assert_eq!(verdicts["daemon"], "warn", "{verdicts:?}");
    assert_eq!(verdicts["store"], "ok", "{verdicts:?}");
    assert_eq!(verdicts["relay"], "fail", "{verdicts:?}");
    assert_eq!(verdicts["ports"], "fail", "{verdicts:?}");
}

/// With messages from a contact, `doctor` compares the clocks: here the
/// same machine's, so they agree.
#[test]
fn doctor_compares_the_clock_with_contacts_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = support::node::alice_and_bob(dir.path());
    cli(&bob, &["send", "alice", "what time is it?"]);
    support::node::eventually("alice to have it", || {
        support::node::texts(&alice, "bob")
            .contains(&"what time is it?".to_owned())
            .then_some(())
    });
    let out = bin()
        .arg("--home")
        .arg(&alice)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let clock = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "clock")
        .unwrap()
        .clone();
    assert_eq!(clock["verdict"], "ok", "{clock}");
    assert!(
        clock["detail"].as_str().unwrap().contains("from 1 sender"),
        "{clock}"
    );
    da.stop();
    db.stop();
}

/// Under systemd (`Type=notify`), the daemon says READY=1 once it serves
/// and STOPPING=1 when it stops; the units in dist/ run commands this
/// binary takes.
#[test]
fn systemd_hears_when_the_daemon_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let home = init(dir.path(), "alice");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let socket_text = socket_path.display().to_string();
    let mut args = vec!["daemon"];
    args.extend(QUIET);
    args.push("/ip4/127.0.0.1/tcp/0");
    let daemon = Running::start(&home, &args, &[("NOTIFY_SOCKET", &socket_text)]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1");
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(said.starts_with("READY=1"), "{said}");
    // It said so once it listens: the line is there.
    daemon.next();
    let Running { mut process, .. } = daemon;
    process.signal("TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(process.wait().success());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for unit in ["dist/safemeet.service", "dist/safemeet-relay.service"] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        assert!(text.contains("Type=notify"), "{unit}");
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let args: Vec<String> = exec
            .split_whitespace()
            .skip(1)
            .map(|a| {
                a.replace("%h", &dir.path().display().to_string())
                    .replace("${STATE_DIRECTORY}", &dir.path().display().to_string())
            })
            .collect();
        // The arguments parse: with --help added, the binary shows help.
        let out = bin().args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{unit}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Without --home, everything goes where the XDG base directories say:
/// the profile in the data dir, config.toml in the config dir, the API
/// socket in the runtime dir.
#[test]
fn without_home_each_file_goes_to_its_xdg_directory() {
    let dir = tempfile::tempdir().unwrap();
    let [data, config, run] = ["data", "config", "run"].map(|d| dir.path().join(d));
    let env = [
        ("HOME", dir.path().to_str().unwrap()),
        ("XDG_DATA_HOME", data.to_str().unwrap()),
        ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ("XDG_RUNTIME_DIR", run.to_str().unwrap()),
    ];
    let mut args = vec!["up", "--username", "dana"];
    args.extend(QUIET);
    args.push("/ip4/127.0.0.1/tcp/0");
    let daemon = Running::start_args(&args, &env);
    daemon.next();
    daemon.next();
    assert!(data.join("safemeet/keyfile").exists());
    assert!(config.join("safemeet/config.toml").exists());
    assert!(run.join("safemeet/safemeet.sock").exists());
    let mut whoami = bin();
    whoami.args(["whoami", "--json"]);
    for (k, v) in env {
        whoami.env(k, v);
    }
    let who: Value = serde_json::from_slice(&whoami.output().unwrap().stdout).unwrap();
    assert!(
        !who["listen_addrs"].as_array().unwrap().is_empty(),
        "whoami reached the daemon through the runtime dir's socket: {who}"
    );
    daemon.stop();
}
