//! Where logs go and what they may say.

/// Log targets a relay never writes, whatever `SAFEMEET_LOG` asks: the
/// network stack's own logs name peers and addresses, and a relay must not
/// keep who talked to it.
const RELAY_SILENT: [&str; 6] = [
    "libp2p",
    "yamux",
    "multistream_select",
    "quinn",
    "rustls",
    "hickory",
];

/// Logs to stderr, filtered by `SAFEMEET_LOG` (default: warnings); a
/// relay never logs the network stack's own lines.
pub(crate) fn init(relay: bool) {
    use tracing_subscriber::EnvFilter;
    // Logs go to stderr so stdout stays clean for --json. Default: warnings.
    // request-response warns once per stream dropped over a connection's
    // cap: a flood would be a flood of lines (the node logs its refusals
    // in aggregate instead).
    let mut filter = EnvFilter::try_from_env("SAFEMEET_LOG").unwrap_or_else(|_| {
        EnvFilter::new("warn,libp2p_kad=error,libp2p_mdns=error,libp2p_request_response=error")
    });
    if relay {
        for target in RELAY_SILENT {
            if let Ok(d) = format!("{target}=off").parse() {
                filter = filter.add_directive(d);
            }
        }
        // sled's debug output can show stored keys (mailbox ids).
        if let Ok(d) = "sled=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colours only on a terminal: a log written to a file or a pipe
    // stays plain text.
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
