//! systemd's readiness protocol (`Type=notify`): when `NOTIFY_SOCKET` is
//! set, the daemon and the relay say `READY=1` once they listen and serve,
//! and `STOPPING=1` when they begin to stop. Without it, nothing happens.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Reads `NOTIFY_SOCKET` (once).
fn socket() -> Option<&'static PathBuf> {
    SOCKET
        .get_or_init(|| std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from))
        .as_ref()
}

fn send(state: &str) {
    let Some(path) = socket() else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let text = path.as_os_str().as_encoded_bytes();
        if let Some(name) = text.strip_prefix(b"@") {
            // An abstract socket (Linux).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(state.as_bytes(), &addr)
        } else {
            s.send_to(state.as_bytes(), path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not tell systemd ({state})");
    }
}

/// Listening and serving.
pub(crate) fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// Stopping.
pub(crate) fn stopping() {
    send("STOPPING=1");
}
