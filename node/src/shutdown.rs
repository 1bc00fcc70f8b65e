//! Stopping cleanly on SIGINT and SIGTERM.
//!
//! The long-running commands (`safemeet daemon`, `safemeet relay`) install
//! the handlers before they open a store or the network. From then on a
//! signal never ends the process where it stands: it cancels the
//! [`CancellationToken`] returned here, which every later step looks at, so
//! whatever was opened is closed the way a normal stop closes it. For the
//! daemon that is the engine's shutdown, which closes the crypto machine:
//! the next start then keeps its outbound room sessions instead of
//! discarding them as it must after a crash. A process stopped by a signal
//! exits with status 0.
//!
//! A signal before this point (while the process starts, or at the
//! daemon's passphrase prompt, which Ctrl-C must still interrupt) ends the
//! process at once, as usual: nothing is open yet.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Installs the SIGINT and SIGTERM handlers on `rt`; the token is
/// cancelled by the first signal. Later signals are noted in the log and
/// otherwise ignored: a stop under way is not cut short (SIGKILL still
/// ends the process at once).
pub(crate) fn install(rt: &tokio::runtime::Runtime) -> anyhow::Result<CancellationToken> {
    // Registering needs the runtime's signal driver; it takes effect at once.
    let _entered = rt.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    rt.spawn(async move {
        let Some(name) = next(&mut interrupt, &mut terminate).await else {
            return;
        };
        tracing::info!(signal = name, "stopping");
        cancel.cancel();
        while let Some(name) = next(&mut interrupt, &mut terminate).await {
            tracing::warn!(
                signal = name,
                "already stopping; SIGKILL stops at once (a daemon's next start then discards \
                 its outbound room sessions)"
            );
        }
    });
    // Tests wait for this line before they send a signal.
    tracing::debug!("SIGINT and SIGTERM now stop cleanly");
    Ok(token)
}

/// The name of the next signal received; `None` once the runtime's signal
/// driver is gone (the runtime is shutting down).
async fn next(interrupt: &mut Signal, terminate: &mut Signal) -> Option<&'static str> {
    tokio::select! {
        Some(()) = interrupt.recv() => Some("SIGINT"),
        Some(()) = terminate.recv() => Some("SIGTERM"),
        else => None,
    }
}
