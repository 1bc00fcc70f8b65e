//! `safemeet daemon`: the node and its API, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use safemeet_api::Identity;
use safemeet_engine::Handle as EngineHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::{runtime, start_engine};
use crate::passphrase::Source;

/// How `safemeet daemon` joins the network.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) no_mdns: bool,
    pub(crate) relays: Vec<Multiaddr>,
    pub(crate) web: Web,
    /// Files: where they are kept, the largest, how fast they are served.
    pub(crate) files: crate::messenger::FileSettings,
    /// Say, for a person, where to go next (`safemeet up`).
    pub(crate) greet: bool,
    /// The flags to write to config.toml once the daemon runs.
    pub(crate) remember: Option<crate::config::Remember>,
}

impl Network {
    /// The settings from the flags, the environment and config.toml (see
    /// [`crate::config`]); the addresses given as flags are remembered.
    pub(crate) fn configured(
        home: &Home,
        home_given: bool,
        flags: crate::config::Flags,
    ) -> Result<Self, Failure> {
        let path = crate::config::path(home.dir(), home_given)?;
        let file = crate::config::read(&path)?;
        let settings = crate::config::resolve(&flags, &file)?;
        if let Some(bad) = settings.relay.iter().find(|a| {
            !a.iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        }) {
            return Err(Failure::Usage(format!(
                "--relay {bad}: a relay address needs /p2p/<peer id> (as `safemeet relay` prints it)"
            )));
        }
        Ok(Network {
            listen: settings.listen,
            bootstrap: settings.bootstrap,
            no_mdns: !settings.mdns,
            relays: settings.relay,
            web: settings.web,
            files: crate::messenger::FileSettings {
                dir: home.blobs_dir(),
                max_bytes: settings.max_file_bytes,
                rate: settings.file_rate,
            },
            greet: false,
            remember: Some(crate::config::Remember { path, flags, file }),
        })
    }
}

/// Where the web app is served (`--web`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Web {
    /// Not asked: [`DEFAULT_WEB`], or a free loopback port if that is taken.
    Default,
    /// `--web off`.
    Off,
    /// `--web ADDR`: there, or the daemon does not start.
    At(SocketAddr),
}

/// The web app's address when none is given.
pub(crate) const DEFAULT_WEB: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7373);

impl std::str::FromStr for Web {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Web::Off);
        }
        s.parse().map(Web::At).map_err(|_| {
            format!("{s:?} is not an address: give IP:PORT (for example 127.0.0.1:7373) or off")
        })
    }
}

/// Binds the web app's address before anything else starts: a taken port
/// or a non-loopback address is a usage error (exit 2).
fn bind_web(web: Web) -> Result<Option<std::net::TcpListener>, Failure> {
    let usage = |e: safemeet_web::StartError| Failure::Usage(e.to_string());
    match web {
        Web::Off => Ok(None),
        Web::At(addr) => safemeet_web::bind(addr).map(Some).map_err(usage),
        Web::Default => match safemeet_web::bind(DEFAULT_WEB) {
            Ok(listener) => Ok(Some(listener)),
            Err(safemeet_web::StartError::Bind(_, e))
                if e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                tracing::warn!(
                    "{DEFAULT_WEB} is taken (another daemon?): the web app gets a free port; \
                     choose one with --web"
                );
                let any = SocketAddr::new(DEFAULT_WEB.ip(), 0);
                safemeet_web::bind(any).map(Some).map_err(usage)
            }
            Err(e) => Err(usage(e)),
        },
    }
}

/// `safemeet daemon`: runs the node and the API until SIGINT or SIGTERM.
///
/// The signal handlers come before the store and the network (see
/// [`crate::shutdown`]): a signal at any point after them ends in a clean
/// stop and exit status 0, and once the engine runs that stop is always the
/// engine's shutdown, which closes the crypto machine.
pub(crate) fn daemon(
    home: &Home,
    source: &Source,
    json: bool,
    network: Network,
) -> Result<(), Failure> {
    let Network {
        listen,
        bootstrap,
        no_mdns,
        relays,
        web,
        files,
        greet,
        remember,
    } = network;
    crate::ports::ensure_free(&listen)?;
    let web = bind_web(web)?;
    // The passphrase before the handlers: Ctrl-C at a prompt must still
    // interrupt it, and nothing is open yet.
    home.require_account()?;
    let passphrase = source.existing()?;
    let rt = runtime()?;
    let stop = crate::shutdown::install(&rt)?;
    // Seconds of Argon2id; a signal meanwhile is seen right after.
    let (store, log) = home.unlock(&passphrase)?;
    drop(passphrase);
    let log = std::sync::Arc::new(log);
    tracing::debug!("profile unlocked");
    if stop.is_cancelled() {
        // The crypto machine was not opened: nothing to close.
        return Ok(());
    }
    rt.block_on(async {
        let mut net = safemeet_net::Config {
            bootstrap,
            relays,
            mdns: !no_mdns,
            ..safemeet_net::Config::default()
        };
        if !listen.is_empty() {
            net.listen = listen;
        }
        let (engine, identity) = start_engine(store, net, log.clone(), Some(files))?;
        tracing::debug!("engine started");
        if let Some(remember) = &remember {
            remember.apply();
        }
        // From here every way out goes through the engine's shutdown.
        let web = web.map(|listener| (listener, web_config(home, &engine, log)));
        let outcome = serve_until_stopped(home, &engine, identity, json, &stop, web, greet).await;
        if let Err(e) = engine.shutdown().await {
            tracing::warn!(error = %e, "the engine did not shut down cleanly");
        }
        let _ = std::fs::remove_file(home.socket());
        tracing::info!("daemon stopped; outbox saved");
        outcome
    })
}

/// Serves the API, says where the daemon listens, and waits for `stop`
/// (or for the API server to fail).
async fn serve_until_stopped(
    home: &Home,
    engine: &EngineHandle,
    identity: Identity,
    json: bool,
    stop: &CancellationToken,
    web: Option<(std::net::TcpListener, safemeet_web::Config)>,
    greet: bool,
) -> Result<(), Failure> {
    let socket = home.socket();
    home.make_socket_dir()?;
    // The API stops with the daemon: the same token, cancelled first.
    let api_stop = stop.child_token();
    let mut web_url = None;
    let web_server = match web {
        Some((listener, config)) => {
            web_url = listener.local_addr().ok().map(|a| format!("http://{a}/"));
            let (engine, identity, api_stop) = (engine.clone(), identity.clone(), api_stop.clone());
            Some(tokio::spawn(async move {
                safemeet_web::serve_until(listener, engine, identity, config, api_stop).await
            }))
        }
        None => None,
    };
    let mut server = {
        let (socket, engine, api_stop) = (socket.clone(), engine.clone(), api_stop.clone());
        tokio::spawn(
            async move { safemeet_api::serve_until(&socket, engine, identity, api_stop).await },
        )
    };
    let addrs = tokio::select! {
        biased;
        () = stop.cancelled() => {
            stop_api(&api_stop, server, web_server).await;
            return Ok(());
        }
        addrs = wait_for_addrs(engine) => addrs,
    };
    let full: Vec<String> = addrs
        .iter()
        .map(|a| safemeet_net::dialable(a, engine.peer_id()).to_string())
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "listen_addrs": full,
                "socket": socket.display().to_string(),
                "web": web_url,
            })
        );
    } else {
        for a in &full {
            println!("listening on {a}");
        }
        println!("API socket: {}", socket.display());
        if let Some(url) = &web_url {
            println!("web app: {url}");
        }
        if greet {
            match &web_url {
                Some(url) => println!(
                    "\nSafeMeet is running. Open {url} in your browser and log in with your \
                     passphrase. Ctrl-C stops it."
                ),
                None => println!("\nSafeMeet is running (no web app: --web off). Ctrl-C stops it."),
            }
        }
    }
    tracing::info!("daemon running");
    crate::notify::ready("running");
    let outcome = tokio::select! {
        biased;
        () = stop.cancelled() => Ok(()),
        r = &mut server => match r {
            Ok(Err(e)) => Err(Failure::Other(anyhow::anyhow!("API socket failed: {e}"))),
            _ => Err(Failure::Other(anyhow::anyhow!("API server stopped"))),
        },
    };
    crate::notify::stopping();
    stop_api(&api_stop, server, web_server).await;
    outcome
}

/// What the web app needs from the daemon: the peer id for its cookie's
/// name, a passphrase check against the key file, and the security log.
fn web_config(
    home: &Home,
    engine: &EngineHandle,
    log: std::sync::Arc<crate::security::SecurityLog>,
) -> safemeet_web::Config {
    let home = home.clone();
    safemeet_web::Config {
        instance: engine.peer_id().to_string(),
        check_passphrase: std::sync::Arc::new(move |p: &str| {
            home.passphrase_opens(&safemeet_crypto::at_rest::Passphrase::new(p))
        }),
        record: std::sync::Arc::new(move |event: &str, subject: Option<String>| {
            log.record(event, subject);
        }),
    }
}

/// Stops the API servers and waits (bounded) until their connections
/// ended.
async fn stop_api(
    api_stop: &CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    web: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) {
    api_stop.cancel();
    for task in std::iter::once(server).chain(web) {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn wait_for_addrs(engine: &EngineHandle) -> Vec<Multiaddr> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..250 {
        tick.tick().await;
        if let Ok(addrs) = engine.listen_addrs().await
            && !addrs.is_empty()
        {
            return addrs;
        }
    }
    Vec::new()
}
