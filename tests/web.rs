//! The web app and the HTTP API, against real daemons on 127.0.0.1: the
//! defences with plain HTTP requests written by hand (foreign `Host`,
//! cross-origin POST, missing CSRF token, cookie flags, guessing the
//! passphrase, hostile bodies and cursors), event streams that resume
//! without a gap, and the app itself in real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, driven over WebDriver).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::time::Duration;

use safemeet_proto::clock::{Clock, SystemClock};

use serde_json::{Value, json};

mod support;

use support::http::{Answer, Events, authority, request};
use support::node::{Daemon, PASS, alice_and_bob, cli, forms, init, secrets_of};

/// A logged-in session: the cookie (`name=value`) and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// The token in the page's `<meta name="csrf">`.
fn page_token(page: &str) -> String {
    let start = page.find("name=\"csrf\" content=\"").unwrap() + 21;
    page[start..].split('"').next().unwrap().to_owned()
}

fn login_token(web: &str) -> String {
    page_token(&request(web, "GET", "/", &[], b"").text())
}

fn login_with(web: &str, passphrase: &str) -> Answer {
    let token = login_token(web);
    request(
        web,
        "POST",
        "/api/v1/login",
        &[
            ("X-CSRF-Token", &token),
            ("Content-Type", "application/json"),
        ],
        json!({ "passphrase": passphrase }).to_string().as_bytes(),
    )
}

fn login(web: &str) -> Session {
    let answer = login_with(web, PASS);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cookie = answer
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    Session {
        cookie,
        csrf: answer.json()["csrf"].as_str().unwrap().to_owned(),
    }
}

/// `whoami` posted with exactly these headers.
fn whoami_with(web: &str, headers: &[(&str, &str)]) -> Answer {
    request(
        web,
        "POST",
        "/api/v1/rpc",
        headers,
        br#"{"jsonrpc":"2.0","id":1,"method":"whoami"}"#,
    )
}

fn rpc(web: &str, session: &Session, method: &str, params: Value) -> Answer {
    request(
        web,
        "POST",
        "/api/v1/rpc",
        &[("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)],
        json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn requests_from_elsewhere_are_refused_and_sessions_are_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let daemon = Daemon::start(&alice);
    let web = authority(daemon.web.as_deref().unwrap());
    let mut seen = Vec::new();

    // A page on another site whose DNS name now points here (rebinding)
    // sends its own name as Host.
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1",
        "127.0.0.2:1",
    ] {
        let answer = request(&web, "GET", "/api/v1/check", &[("Host", host)], b"");
        assert_eq!(answer.status, 403, "Host {host}: {}", answer.text());
    }
    let check = request(&web, "GET", "/api/v1/check", &[], b"");
    assert_eq!(check.status, 200);
    assert_eq!(check.json()["logged_in"], false);
    for (name, _) in [
        ("content-security-policy", ()),
        ("x-frame-options", ()),
        ("x-content-type-options", ()),
        ("referrer-policy", ()),
    ] {
        assert!(check.header(name).is_some(), "{name} on every answer");
    }
    assert!(
        check
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );

    // Nothing but the page and check without a session.
    let page = request(&web, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    seen.push(page.body.clone());
    for path in ["/assets/app.js", "/assets/app.css"] {
        let asset = request(&web, "GET", path, &[], b"");
        assert_eq!(asset.status, 200, "{path}");
        seen.push(asset.body);
    }
    let anonymous = whoami_with(&web, &[("X-CSRF-Token", &page_token(&page.text()))]);
    assert_eq!(anonymous.status, 401, "rpc without a session");
    assert_eq!(
        request(&web, "GET", "/api/v1/events", &[], b"").status,
        401,
        "events without a session"
    );

    // A login needs the page's token, and a cross-origin one is refused.
    let no_token = request(
        &web,
        "POST",
        "/api/v1/login",
        &[],
        json!({ "passphrase": PASS }).to_string().as_bytes(),
    );
    assert_eq!(no_token.status, 403, "login without a CSRF token");
    let cross = request(
        &web,
        "POST",
        "/api/v1/login",
        &[
            ("Origin", "http://evil.example"),
            ("X-CSRF-Token", &login_token(&web)),
        ],
        json!({ "passphrase": PASS }).to_string().as_bytes(),
    );
    assert_eq!(cross.status, 403, "cross-origin login");

    let answer = login_with(&web, PASS);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cookie = answer.header("set-cookie").unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(cookie.starts_with("safemeet-"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let behind_tls = request(
        &web,
        "POST",
        "/api/v1/login",
        &[
            ("X-CSRF-Token", &login_token(&web)),
            ("X-Forwarded-Proto", "https"),
        ],
        json!({ "passphrase": PASS }).to_string().as_bytes(),
    );
    assert!(
        behind_tls
            .header("set-cookie")
            .unwrap()
            .contains("; Secure"),
        "over HTTPS the cookie is Secure"
    );
    let session = login(&web);

    // With a session: rpc works with the token, not without it, and not
    // from another origin or site.
    let who = rpc(&web, &session, "whoami", json!({}));
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["result"]["username"], "alice");
    seen.push(who.body);
    let no_csrf = whoami_with(&web, &[("Cookie", &session.cookie)]);
    assert_eq!(no_csrf.status, 403, "rpc without a CSRF token");
    let wrong_csrf = whoami_with(
        &web,
        &[("Cookie", &session.cookie), ("X-CSRF-Token", "guess")],
    );
    assert_eq!(wrong_csrf.status, 403, "rpc with a wrong CSRF token");
    let foreign = whoami_with(
        &web,
        &[
            ("Cookie", &session.cookie),
            ("X-CSRF-Token", &session.csrf),
            ("Origin", "http://localhost:1"),
        ],
    );
    assert_eq!(foreign.status, 403, "a POST from another origin");
    let same_site = request(
        &web,
        "GET",
        "/api/v1/events",
        &[("Cookie", &session.cookie), ("Sec-Fetch-Site", "same-site")],
        b"",
    );
    assert_eq!(same_site.status, 403, "a page on another localhost port");
    let logged_in_page = request(&web, "GET", "/", &[("Cookie", &session.cookie)], b"");
    assert_eq!(page_token(&logged_in_page.text()), session.csrf);
    seen.push(logged_in_page.body);
    let invite = rpc(&web, &session, "invite", json!({}));
    seen.push(invite.body);
    let qr = request(
        &web,
        "GET",
        "/api/v1/invite.svg",
        &[("Cookie", &session.cookie)],
        b"",
    );
    assert_eq!(qr.status, 200);
    assert!(qr.text().starts_with("<svg"), "{}", qr.text());

    // Hostile input: a body over 256 KiB, bytes that are not UTF-8, a
    // method that would write a file on this machine, a cursor that is not
    // one. Each gets its error, and the server goes on.
    let huge = vec![b'a'; 1 << 20];
    let too_big = request(
        &web,
        "POST",
        "/api/v1/rpc",
        &[("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)],
        &huge,
    );
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    let binary = request(
        &web,
        "POST",
        "/api/v1/rpc",
        &[("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)],
        &[0xff, 0xfe, 0x00],
    );
    assert_eq!(binary.json()["error"]["code"], -32600, "{}", binary.text());
    let export = rpc(
        &web,
        &session,
        "export.archive",
        json!({ "file": dir.path().join("stolen").display().to_string(), "passphrase": "x" }),
    );
    assert_eq!(export.json()["error"]["data"]["kind"], "local_only");
    assert!(!dir.path().join("stolen").exists());
    let bad_cursor = request(
        &web,
        "GET",
        "/api/v1/events",
        &[("Cookie", &session.cookie), ("Last-Event-ID", "'; DROP")],
        b"",
    );
    assert_eq!(bad_cursor.status, 400);
    assert_eq!(rpc(&web, &session, "whoami", json!({})).status, 200);

    // Logout ends the session: the cookie opens nothing after it.
    let out = request(
        &web,
        "POST",
        "/api/v1/logout",
        &[("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)],
        b"",
    );
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(rpc(&web, &session, "whoami", json!({})).status, 401);
    daemon.stop();

    // No page, script or answer held the passphrase or a key.
    let mut secrets: Vec<Vec<u8>> = vec![PASS.as_bytes().to_vec()];
    for secret in secrets_of(&alice) {
        secrets.extend(forms(&secret));
    }
    for body in &seen {
        for secret in &secrets {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a web answer holds a secret"
            );
        }
    }
}

/// Ten wrong passphrases are each answered slowly; the eleventh waits
/// longer still; each is in the security log; the right one still opens.
#[test]
fn guessing_the_passphrase_is_slowed_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let daemon = Daemon::start(&alice);
    let web = authority(daemon.web.as_deref().unwrap());

    let mut took = Vec::new();
    for i in 0..11 {
        let start = SystemClock.instant();
        let answer = login_with(&web, &format!("wrong guess {i}"));
        took.push(start.elapsed());
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert!(answer.header("set-cookie").is_none());
    }
    let first_ten = &took[..10];
    assert!(
        first_ten.iter().all(|t| *t >= Duration::from_millis(500)),
        "each wrong passphrase is slowed: {first_ten:?}"
    );
    let slowest = first_ten.iter().max().unwrap();
    assert!(
        took[10] >= Duration::from_secs(4) && took[10] > *slowest + Duration::from_secs(2),
        "the 11th waits longer: {took:?}"
    );
    // The right one is not held back by the count, and clears it.
    let start = SystemClock.instant();
    login(&web);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );

    let log = cli(&alice, &["audit"]);
    let failed = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "web_login_failed")
        .count();
    assert_eq!(failed, 11, "{log}");
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "web_login"),
        "{log}"
    );
    daemon.stop();
}

/// An event stream cut in the middle and opened again with its last id
/// (`Last-Event-ID`, as a browser does) gets every event after it once,
/// the same as `events` lists.
#[test]
fn event_streams_resume_from_last_event_id_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, bob, da, db) = alice_and_bob(dir.path());
    let web = authority(da.web.as_deref().unwrap());
    let session = login(&web);
    let cursors = |since: u64| -> Vec<u64> {
        rpc(
            &web,
            &session,
            "events",
            json!({ "since": since, "limit": 10000 }),
        )
        .json()["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cursor"].as_u64().unwrap())
            .collect()
    };
    let start = cursors(0).last().copied().unwrap_or(0);

    let mut stream = Events::open(
        &web,
        &format!("/api/v1/events?since={start}"),
        &[("Cookie", &session.cookie)],
    );
    for i in 0..5 {
        cli(&bob, &["send", "alice", &format!("first {i}")]);
    }
    let mut got = Vec::new();
    let mut texts = Vec::new();
    while texts.len() < 5 {
        let (id, event) = stream.next();
        assert_eq!(event["cursor"], id, "the id is the cursor");
        if event["type"] == "message" {
            texts.push(event["message"]["text"].as_str().unwrap().to_owned());
        }
        got.push(id);
    }
    drop(stream);
    // Sent while no stream is open.
    for i in 0..5 {
        cli(&bob, &["send", "alice", &format!("second {i}")]);
    }
    let last = *got.last().unwrap();
    let mut stream = Events::open(
        &web,
        "/api/v1/events?since=0",
        &[
            ("Cookie", &session.cookie),
            ("Last-Event-ID", &last.to_string()),
        ],
    );
    while texts.len() < 10 {
        let (id, event) = stream.next();
        if event["type"] == "message" {
            texts.push(event["message"]["text"].as_str().unwrap().to_owned());
        }
        got.push(id);
    }
    let mut expected: Vec<String> = (0..5).map(|i| format!("first {i}")).collect();
    expected.extend((0..5).map(|i| format!("second {i}")));
    assert_eq!(texts, expected, "every message once, in order");
    // Exactly the log's entries, none skipped or repeated.
    let listed: Vec<u64> = cursors(start)
        .into_iter()
        .filter(|c| c <= got.last().unwrap())
        .collect();
    assert_eq!(got, listed);

    // A client that opens streams and never reads them costs nothing to
    // the others: the server still answers at once.
    let stalled: Vec<Events> = (0..20)
        .map(|_| Events::open(&web, "/api/v1/events", &[("Cookie", &session.cookie)]))
        .collect();
    for i in 0..20 {
        cli(&bob, &["send", "alice", &format!("flood {i}")]);
    }
    assert_eq!(rpc(&web, &session, "whoami", json!({})).status, 200);
    drop(stalled);
    // Logout ends the session's open streams.
    let mut open = Events::open(
        &web,
        &format!("/api/v1/events?since={last}"),
        &[("Cookie", &session.cookie)],
    );
    open.next();
    request(
        &web,
        "POST",
        "/api/v1/logout",
        &[("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)],
        b"",
    );
    // Reads on until the server closes the stream (a read that times out
    // panics: the stream stayed open).
    while open.try_next().is_some() {}
    da.stop();
    db.stop();
}

/// `chromedriver` on a free loopback port, stopped when dropped.
struct Chromedriver {
    url: String,
    _process: support::Reaped,
}

impl Chromedriver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "chromedriver runs: install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver); .ci/run does",
            );
        let process = support::Reaped::new(child);
        let authority = format!("127.0.0.1:{port}");
        support::node::eventually("chromedriver to answer", || {
            std::net::TcpStream::connect(&authority).ok()
        });
        Chromedriver {
            url: format!("http://{authority}"),
            _process: process,
        }
    }
}

/// A multi-threaded runtime for a browser test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Clicks the element `css` names, once it is there.
async fn click(client: &fantoccini::Client, css: &str) {
    element(client, css).await.click().await.unwrap();
}

/// Clicks the element `path` (XPath) names, once it is there.
async fn click_xpath(client: &fantoccini::Client, path: &str) {
    xpath(client, path).await.click().await.unwrap();
}

/// Types `text` into the element `css` names, once it is there.
async fn type_into(client: &fantoccini::Client, css: &str, text: &str) {
    element(client, css).await.send_keys(text).await.unwrap();
}

/// Logs in with the passphrase and opens the conversation called `name`.
async fn log_in_and_open(client: &fantoccini::Client, name: &str) {
    type_into(client, "#login:not([hidden]) #passphrase", PASS).await;
    click(client, "#login-form button[type=submit]").await;
    click_xpath(
        client,
        &format!("//ul[@id='conversations']//button[span[text()='{name}']]"),
    )
    .await;
}

/// Chromium with a profile of its own, at `url`.
async fn browser(driver: &Chromedriver, profile: &Path, url: &str) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--password-store=basic", "--window-size=1000,760",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    client.goto(url).await.unwrap();
    client
}

/// Waits for the element `css` (visible or not) names.
async fn element(client: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(support::node::WAIT)
        .for_element(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} appeared: {e}"))
}

async fn xpath(client: &fantoccini::Client, path: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(support::node::WAIT)
        .for_element(fantoccini::Locator::XPath(path))
        .await
        .unwrap_or_else(|e| panic!("{path} appeared: {e}"))
}

/// In real headless Chromium: log in, open the conversation with Bob,
/// send him a message with the keyboard, see his reply appear without a
/// reload, and the message's state change; a reload keeps the session,
/// logout ends it. Also: the conversation fits a phone's width.
#[test]
fn a_browser_logs_in_sends_a_dm_and_sees_the_reply_live() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let url = da.web.clone().unwrap();
    let driver = Chromedriver::start();
    runtime().block_on(async {
        let client = browser(&driver, &dir.path().join("chromium"), &url).await;
        log_in_and_open(&client, "bob").await;
        // Typed and sent with Enter.
        type_into(
            &client,
            "#conversation:not([hidden]) #send-text",
            "hello from the browser\u{E007}",
        )
        .await;
        let bob_home = bob.clone();
        tokio::task::spawn_blocking(move || {
            support::node::eventually("bob to get the browser's message", || {
                support::node::texts(&bob_home, "alice")
                    .contains(&"hello from the browser".to_owned())
                    .then_some(())
            })
        })
        .await
        .unwrap();
        let bob_home = bob.clone();
        tokio::task::spawn_blocking(move || cli(&bob_home, &["send", "alice", "hi, browser"]))
            .await
            .unwrap();
        // Bob's reply appears live, named; Alice's own message says "me"
        // and turns delivered.
        let reply = xpath(
            &client,
            "//ol[@id='messages']/li[span[@class='text' and text()='hi, browser']]",
        )
        .await;
        let meta = reply.find(fantoccini::Locator::Css(".meta")).await.unwrap();
        assert!(meta.text().await.unwrap().starts_with("bob · "));
        xpath(
            &client,
            "//ol[@id='messages']/li[@class='mine' and span[@class='text' and \
             text()='hello from the browser'] and span[starts-with(., 'me · ') and \
             span[@class='state' and text()='delivered']]]",
        )
        .await;
        let shot = client.screenshot().await.unwrap();
        assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
        let to = if std::env::var_os("SAFEMEET_UPDATE_SCREENSHOT").is_some() {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/web-conversation.png")
        } else {
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-conversation.png")
        };
        std::fs::write(&to, &shot).unwrap();

        // At a phone's width nothing runs off the side.
        client.set_window_size(390, 844).await.unwrap();
        let fits = client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "the page fits 390 px");

        // A reload keeps the session, and the conversation list.
        client.refresh().await.unwrap();
        element(&client, "#app:not([hidden]) #conversations button").await;
        assert!(
            client
                .find(fantoccini::Locator::Css("#login:not([hidden])"))
                .await
                .is_err(),
            "no login form after a reload"
        );
        // Logout ends it, also after a reload.
        click(&client, "#logout").await;
        element(&client, "#login:not([hidden]) #passphrase").await;
        client.refresh().await.unwrap();
        element(&client, "#login:not([hidden]) #passphrase").await;
        let check = client
            .execute("return fetch('/api/v1/check').then(r => r.json())", vec![])
            .await
            .unwrap();
        assert_eq!(check["logged_in"], false, "{check}");
        client.close().await.unwrap();
    });
    let _ = alice;
    da.stop();
    db.stop();
}

/// Clicks the navigation button `view` until `path` (XPath) appears: what
/// the view shows is read when it opens.
async fn reopen_until(client: &fantoccini::Client, view: &str, path: &str) {
    let button = format!("header nav button[data-view='{view}']");
    for _ in 0..60 {
        click(client, &button).await;
        let found = client
            .wait()
            .at_most(std::time::Duration::from_secs(1))
            .for_element(fantoccini::Locator::XPath(path))
            .await;
        if found.is_ok() {
            return;
        }
    }
    panic!("{path} never showed in {view}");
}

/// The other screens, in Chromium: a contact added by pasting their
/// invite, a room created and a contact invited to it, an invitation
/// joined, a room left.
#[test]
fn a_browser_adds_a_contact_and_manages_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, carol) = (init(dir.path(), "alice"), init(dir.path(), "carol"));
    let (da, dc) = (Daemon::start(&alice), Daemon::start(&carol));
    let invite_of = |home: &Path| {
        cli(home, &["invite"])["invite"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let carol_invite = invite_of(&carol);
    cli(
        &carol,
        &["contact", "add", &invite_of(&alice), "--name", "alice"],
    );
    let url = da.web.clone().unwrap();
    let driver = Chromedriver::start();
    runtime().block_on(async {
        let client = browser(&driver, &dir.path().join("chromium"), &url).await;
        type_into(
            &client,
            "#login:not([hidden]) #passphrase",
            &format!("{PASS}\u{E007}"),
        )
        .await;
        element(&client, "#app:not([hidden])").await;

        // Contacts: Carol's invite pasted in.
        click(&client, "header nav button[data-view='contacts']").await;
        element(&client, "#invite-qr[src]").await;
        type_into(&client, "#invite-text", &carol_invite).await;
        type_into(&client, "#contact-name", "carol").await;
        click(&client, "#add-contact button[type=submit]").await;
        xpath(&client, "//ul[@id='contacts']/li[starts-with(., 'carol')]").await;

        // Rooms: create "club", invite Carol; she joins from her CLI.
        click(&client, "header nav button[data-view='rooms']").await;
        type_into(&client, "#room-name", "club").await;
        click(&client, "#create-room button[type=submit]").await;
        click_xpath(
            &client,
            "//ul[@id='rooms']/li[strong[text()='club']]//button[text()='Invite']",
        )
        .await;
        let carol_home = carol.clone();
        tokio::task::spawn_blocking(move || {
            support::node::eventually("Carol's invitation to club", || {
                let pending = cli(&carol_home, &["room", "invitations"]);
                pending
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["name"] == "club")
                    .then_some(())
            });
            cli(&carol_home, &["room", "join", "club"]);
            // Carol's own room, with Alice: an invitation on Alice's side.
            cli(
                &carol_home,
                &["room", "create", "readers", "--member", "alice"],
            );
        })
        .await
        .unwrap();
        reopen_until(
            &client,
            "rooms",
            "//ul[@id='invitations']//button[text()='Join readers']",
        )
        .await;
        click_xpath(
            &client,
            "//ul[@id='invitations']//button[text()='Join readers']",
        )
        .await;
        xpath(&client, "//ul[@id='rooms']/li[strong[text()='readers']]").await;
        xpath(
            &client,
            "//ul[@id='conversations']//button[span[text()='# readers']]",
        )
        .await;

        // Alice leaves club; Carol sees her go.
        click_xpath(&client, "//button[text()='Leave club']").await;
        let carol_home = carol.clone();
        let alice_id = support::node::user_id(&alice);
        tokio::task::spawn_blocking(move || {
            support::node::eventually("Alice gone from club", || {
                let rooms = cli(&carol_home, &["room", "list"]);
                rooms
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == "club")
                    .is_some_and(|r| {
                        !r["members"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m == alice_id.as_str())
                    })
                    .then_some(())
            });
        })
        .await
        .unwrap();
        client.close().await.unwrap();
    });
    da.stop();
    dc.stop();
}

/// A local program that opens connection after connection and sends
/// nothing: past the cap, it waits in the kernel's queue; the daemon keeps
/// its descriptors and goes on serving the socket API, and the web app
/// answers again once the flood lets go.
#[test]
fn a_flood_of_idle_connections_cannot_take_the_daemon_down() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let daemon = Daemon::start(&alice);
    let web = authority(daemon.web.as_deref().unwrap());
    let flood: Vec<std::net::TcpStream> = (0..safemeet_web::MAX_CONNECTIONS + 20)
        .map(|_| std::net::TcpStream::connect(&web).unwrap())
        .collect();
    // The cap is taken: a request now waits (no answer within a second).
    let mut late = std::net::TcpStream::connect(&web).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::io::Write::write_all(
        &mut late,
        format!("GET /api/v1/check HTTP/1.0\r\nHost: {web}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let waited = std::io::Read::read(&mut late, &mut buf);
    assert!(waited.is_err(), "served past the cap: {waited:?}");
    // The daemon itself is fine.
    assert_eq!(cli(&alice, &["whoami"])["username"], "alice");
    drop(flood);
    // The waiting request is served once slots free up, and new ones too.
    late.set_read_timeout(Some(support::node::WAIT)).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut late, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{answer}"
    );
    assert_eq!(request(&web, "GET", "/api/v1/check", &[], b"").status, 200);
    daemon.stop();
}

/// A PNG of `w`×`h` pixels, red on blue, built by hand (stored deflate
/// blocks): something a browser really decodes.
fn png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // no filter
        for x in 0..w {
            raw.extend_from_slice(if (x + y) % 2 == 0 {
                &[255, 0, 0]
            } else {
                &[0, 0, 255]
            });
        }
    }
    // zlib: header, one stored block (raw is small), Adler-32.
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// In real headless Chromium: Alice sends Bob a picture from the page's
/// file input, and Bob's daemon gets it whole; Bob sends one back from
/// the CLI, and the page shows it inline once it is held whole and
/// checked (the browser decoded it: its natural size is the picture's).
#[test]
fn a_browser_sends_a_picture_and_shows_one_it_received() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, bob, da, db) = alice_and_bob(dir.path());
    let url = da.web.clone().unwrap();
    let sent_png = png(3, 2);
    let sent_path = dir.path().join("from-alice.png");
    std::fs::write(&sent_path, &sent_png).unwrap();
    let back_png = png(5, 4);
    let back_path = dir.path().join("from-bob.png");
    std::fs::write(&back_path, &back_png).unwrap();
    let driver = Chromedriver::start();
    runtime().block_on(async {
        let client = browser(&driver, &dir.path().join("chromium"), &url).await;
        log_in_and_open(&client, "bob").await;
        type_into(&client, "#conversation:not([hidden]) #send-text", "a picture").await;
        element(&client, "#attach")
            .await
            .send_keys(sent_path.to_str().unwrap())
            .await
            .unwrap();
        // Bob's daemon holds it whole, with the caption, and it saves
        // bit-identical.
        let bob_home = bob.clone();
        let saved = dir.path().join("saved.png");
        let saved_to = saved.clone();
        tokio::task::spawn_blocking(move || {
            let event = support::node::eventually("bob to get the picture", || {
                let messages = cli(&bob_home, &["messages", "alice"]);
                messages.as_array().unwrap().iter().find_map(|m| {
                    (m["file"]["name"] == "from-alice.png"
                        && m["text"] == "a picture"
                        && m["file"]["transfer"]["state"] == "complete")
                        .then(|| m["event_id"].as_str().unwrap().to_owned())
                })
            });
            cli(&bob_home, &["download", &event, saved_to.to_str().unwrap()]);
        })
        .await
        .unwrap();
        assert!(std::fs::read(&saved).unwrap() == sent_png);
        // Alice's own picture shows at once; Bob's once it is whole.
        let bob_home = bob.clone();
        let back = back_path.clone();
        tokio::task::spawn_blocking(move || {
            cli(&bob_home, &["send", "alice", "--file", back.to_str().unwrap()])
        })
        .await
        .unwrap();
        let img = xpath(
            &client,
            "//ol[@id='messages']/li[not(@class='mine')]//img[@class='inline-image' and @alt='from-bob.png']",
        )
        .await;
        let mut size = Value::Null;
        for _ in 0..100 {
            size = client
                .execute(
                    "const i = arguments[0]; return i.complete ? [i.naturalWidth, i.naturalHeight] : null;",
                    vec![serde_json::to_value(&img).unwrap()],
                )
                .await
                .unwrap();
            if !size.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(size, json!([5, 4]), "the received picture decoded");
        client.close().await.unwrap();
    });
    da.stop();
    db.stop();
}

/// Files over plain HTTP: an upload needs the session and its CSRF
/// token, names are checked, a download comes with headers that keep
/// whatever the file holds out of the app's origin, and ids that name no
/// file are refused.
#[test]
fn files_over_http_are_guarded_and_served_with_safe_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, _bob, da, db) = alice_and_bob(dir.path());
    let web = authority(da.web.as_deref().unwrap());
    let session = login(&web);
    let with_session: [(&str, &str); 2] =
        [("Cookie", &session.cookie), ("X-CSRF-Token", &session.csrf)];
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // No CSRF token, or no session: refused, nothing sent.
    let upload = |headers: &[(&str, &str)], query: &str, body: &[u8]| {
        request(
            &web,
            "POST",
            &format!("/api/v1/files?{query}"),
            headers,
            body,
        )
    };
    let refused = upload(
        &[("Cookie", &session.cookie)],
        "target=bob&name=a.bin",
        &data,
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(upload(&[], "target=bob&name=a.bin", &data).status, 401);
    // A name that climbs out of a directory, or an unknown contact.
    let bad = upload(&with_session, "target=bob&name=..%2Fx", &data);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let nobody = upload(&with_session, "target=nobody&name=a.bin", &data);
    assert_eq!(nobody.status, 404, "{}", nobody.text());

    // Sent, then saved back: an attachment, sandboxed, bit-identical.
    let sent = upload(&with_session, "target=bob&name=notes.bin&caption=hi", &data);
    assert_eq!(sent.status, 200, "{}", sent.text());
    let event = sent.json()["event_id"].as_str().unwrap().to_owned();
    let got = request(
        &web,
        "GET",
        &format!("/api/v1/files/{event}"),
        &[("Cookie", &session.cookie)],
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename*=UTF-8''notes.bin")
    );
    assert!(
        got.header("content-security-policy")
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(got.body == data, "the file came back whole");
    // A picture is inline, with its type.
    let picture = png(2, 2);
    let sent = request(
        &web,
        "POST",
        "/api/v1/files?target=bob&name=p.png",
        &[
            ("Cookie", &session.cookie),
            ("X-CSRF-Token", &session.csrf),
            ("Content-Type", "image/png"),
        ],
        &picture,
    );
    let event = sent.json()["event_id"].as_str().unwrap().to_owned();
    let got = request(
        &web,
        "GET",
        &format!("/api/v1/files/{event}"),
        &[("Cookie", &session.cookie)],
        b"",
    );
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert!(
        got.header("content-disposition")
            .unwrap()
            .starts_with("inline;")
    );
    assert!(got.body == picture);

    // A text message is no file; a bad id is a bad request; no session,
    // no file.
    let text = rpc(
        &web,
        &session,
        "send",
        json!({"target": "bob", "text": "plain"}),
    );
    let text_event = text.json()["result"]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/files/{text_event}");
    let cookie = [("Cookie", session.cookie.as_str())];
    assert_eq!(request(&web, "GET", &path, &cookie, b"").status, 404);
    assert_eq!(
        request(&web, "GET", "/api/v1/files/e_nope", &cookie, b"").status,
        400
    );
    assert_eq!(
        request(&web, "GET", &format!("/api/v1/files/{event}"), &[], b"").status,
        401
    );
    da.stop();
    db.stop();
}

/// Waits for the call bar's text to match `test` (an XPath predicate on it).
async fn call_shows(client: &fantoccini::Client, test: &str) {
    xpath(client, &format!("//span[@id='call-state' and {test}]")).await;
}

/// The state of `home`'s call on now (or last), as `call status` says.
fn call_state(home: &Path) -> String {
    cli(home, &["call", "status"])
        .as_array()
        .and_then(|a| a.first())
        .and_then(|c| c["state"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// In real headless Chromium: Alice calls Bob from the conversation's
/// call bar, Bob answers from the CLI, the page shows the call and hangs
/// it up; then Bob calls, and the page answers.
#[test]
fn a_browser_calls_a_contact_and_answers_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let url = da.web.clone().unwrap();
    let driver = Chromedriver::start();
    runtime().block_on(async {
        let client = browser(&driver, &dir.path().join("chromium"), &url).await;
        log_in_and_open(&client, "bob").await;
        click(&client, "#call-start:not([hidden])").await;
        let bob_home = bob.clone();
        tokio::task::spawn_blocking(move || {
            support::node::eventually("bob's device rings", || {
                (call_state(&bob_home) == "ringing").then_some(())
            });
            cli(&bob_home, &["call", "accept"]);
        })
        .await
        .unwrap();
        call_shows(&client, "starts-with(., 'In a call with bob')").await;
        click(&client, "#call-hangup:not([hidden])").await;
        call_shows(&client, "starts-with(., 'Call ended')").await;
        let bob_home = bob.clone();
        tokio::task::spawn_blocking(move || {
            support::node::eventually("bob's end too", || {
                (call_state(&bob_home) == "ended").then_some(())
            });
            cli(&bob_home, &["call", "alice"]);
        })
        .await
        .unwrap();
        call_shows(&client, "text()='bob is calling'").await;
        click(&client, "#call-accept:not([hidden])").await;
        call_shows(&client, "starts-with(., 'In a call with bob')").await;
        let bob_home = bob.clone();
        tokio::task::spawn_blocking(move || cli(&bob_home, &["call", "hangup"]))
            .await
            .unwrap();
        call_shows(&client, "starts-with(., 'Call ended')").await;
        client.close().await.unwrap();
    });
    let _ = alice;
    da.stop();
    db.stop();
}
