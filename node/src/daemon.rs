//! `safemeet daemon`: the node and its API, until SIGINT or SIGTERM.

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
    } = network;
    if let Some(bad) = relays.iter().find(|a| {
        !a.iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
    }) {
        return Err(Failure::Usage(format!(
            "--relay {bad}: a relay address needs /p2p/<peer id> (as `safemeet relay` prints it)"
        )));
    }
    crate::ports::ensure_free(&listen)?;
    // The passphrase before the handlers: Ctrl-C at a prompt must still
    // interrupt it, and nothing is open yet.
    home.require_account()?;
    let passphrase = source.existing()?;
    let rt = runtime()?;
    let stop = crate::shutdown::install(&rt)?;
    // Seconds of Argon2id; a signal meanwhile is seen right after.
    let (store, log) = home.unlock(&passphrase)?;
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
        let (engine, identity) = start_engine(store, net, log)?;
        tracing::debug!("engine started");
        // From here every way out goes through the engine's shutdown.
        let outcome = serve_until_stopped(home, &engine, identity, json, &stop).await;
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
) -> Result<(), Failure> {
    let socket = home.socket();
    // The API stops with the daemon: the same token, cancelled first.
    let api_stop = stop.child_token();
    let mut server = {
        let (socket, engine, api_stop) = (socket.clone(), engine.clone(), api_stop.clone());
        tokio::spawn(
            async move { safemeet_api::serve_until(&socket, engine, identity, api_stop).await },
        )
    };
    let addrs = tokio::select! {
        biased;
        () = stop.cancelled() => {
            stop_api(&api_stop, server).await;
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
            json!({ "listen_addrs": full, "socket": socket.display().to_string() })
        );
    } else {
        for a in &full {
            println!("listening on {a}");
        }
        println!("API socket: {}", socket.display());
    }
    tracing::info!("daemon running");
    let outcome = tokio::select! {
        biased;
        () = stop.cancelled() => Ok(()),
        r = &mut server => match r {
            Ok(Err(e)) => Err(Failure::Other(anyhow::anyhow!("API socket failed: {e}"))),
            _ => Err(Failure::Other(anyhow::anyhow!("API server stopped"))),
        },
    };
    stop_api(&api_stop, server).await;
    outcome
}

/// Stops the API server and waits (bounded) until its connections ended.
async fn stop_api(
    api_stop: &CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    api_stop.cancel();
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        abort.abort();
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
