//! Opt-in operator metrics: Prometheus text on `/metrics` and a JSON
//! `/status`, served on an address of the operator's choosing to an
//! allowlist of IP addresses. Counters and gauges only: no label ever holds
//! a user id, a peer id, a mailbox id or an address. libp2p's own metrics
//! share the registry.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use safemeet_proto::mailbox::{DepositOutcome, MailboxError, MailboxResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Totals;

/// Why a request was refused, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

fn reason(code: MailboxError) -> &'static str {
    match code {
        MailboxError::Malformed => "malformed",
        MailboxError::TooLarge => "too_large",
        MailboxError::MailboxFull => "mailbox_full",
        MailboxError::RelayFull => "relay_full",
        MailboxError::NotAccepting => "not_accepting",
        MailboxError::BadSignature => "bad_signature",
        MailboxError::BadNonce => "bad_nonce",
        MailboxError::RateLimited => "rate_limited",
        MailboxError::Internal => "internal",
        MailboxError::Refused => "refused",
        _ => "other",
    }
}

/// What the relay counts.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    deposits: Counter,
    refused: Family<Reason, Counter>,
    network_refused: Family<Reason, Counter>,
    fetches: Counter,
    fetched: Counter,
    acks: Counter,
    opens: Counter,
    deleted: Counter,
    purged: Counter,
    envelopes: Gauge,
    bytes: Gauge,
    mailboxes: Gauge,
    status: Arc<Mutex<Status>>,
}

/// The relay's state for `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// Envelopes held.
    pub envelopes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Mailboxes known.
    pub mailboxes: u64,
    /// Whether deposits may open new mailboxes.
    pub accepting_new_mailboxes: bool,
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl RelayMetrics {
    /// Registers the relay's metrics in `registry`.
    pub fn new(registry: &mut Registry, accepting_new_mailboxes: bool) -> Self {
        let sub = registry.sub_registry_with_prefix("safemeet_relay");
        let m = Self {
            deposits: Counter::default(),
            refused: Family::default(),
            network_refused: Family::default(),
            fetches: Counter::default(),
            fetched: Counter::default(),
            acks: Counter::default(),
            opens: Counter::default(),
            deleted: Counter::default(),
            purged: Counter::default(),
            envelopes: Gauge::default(),
            bytes: Gauge::default(),
            mailboxes: Gauge::default(),
            status: Arc::new(Mutex::new(Status {
                accepting_new_mailboxes,
                ..Status::default()
            })),
        };
        sub.register("deposits", "Envelopes stored", m.deposits.clone());
        sub.register("refused", "Requests refused, by reason", m.refused.clone());
        sub.register(
            "network_refused",
            "Connections and streams refused before any request, by reason",
            m.network_refused.clone(),
        );
        sub.register("fetches", "Fetch requests answered", m.fetches.clone());
        sub.register(
            "fetched_envelopes",
            "Envelopes handed out by fetches",
            m.fetched.clone(),
        );
        sub.register("acks", "Ack requests answered", m.acks.clone());
        sub.register("opens", "Open requests answered", m.opens.clone());
        sub.register(
            "deleted_envelopes",
            "Envelopes deleted on ack",
            m.deleted.clone(),
        );
        sub.register(
            "expired_envelopes",
            "Envelopes deleted on expiry",
            m.purged.clone(),
        );
        sub.register("stored_envelopes", "Envelopes held", m.envelopes.clone());
        sub.register(
            "stored_bytes",
            "Bytes held, as they weigh on disk",
            m.bytes.clone(),
        );
        sub.register("mailboxes", "Mailboxes known", m.mailboxes.clone());
        m
    }

    /// Counts what an answer says.
    pub fn answered(&self, response: &MailboxResponse) {
        match response {
            MailboxResponse::Receipt(_) => {
                self.deposits.inc();
            }
            MailboxResponse::Receipts(outcomes) => {
                for o in outcomes {
                    match o {
                        DepositOutcome::Stored(_) => {
                            self.deposits.inc();
                        }
                        DepositOutcome::Refused { code, .. } => self.refused(*code),
                    }
                }
            }
            MailboxResponse::Envelopes { items, .. } => {
                self.fetches.inc();
                self.fetched.inc_by(items.len() as u64);
            }
            MailboxResponse::Acked { removed } => {
                self.acks.inc();
                self.deleted.inc_by(u64::from(*removed));
            }
            MailboxResponse::Purged(receipt) => {
                self.deleted.inc_by(u64::from(receipt.removed));
            }
            MailboxResponse::Error { code, .. } => self.refused(*code),
            MailboxResponse::Opened => {
                self.opens.inc();
            }
            MailboxResponse::Nonce(_) => {}
        }
    }

    /// Counts a refusal.
    pub fn refused(&self, code: MailboxError) {
        self.refused
            .get_or_create(&Reason {
                reason: reason(code),
            })
            .inc();
    }

    /// Counts a refusal at the network level (a connection over its
    /// address's cap, a stalled or oversized stream).
    pub fn refused_network(&self, kind: safemeet_net::Refusal) {
        self.refused_network_n(kind, 1);
    }

    /// Counts `n` refusals at the network level.
    pub fn refused_network_n(&self, kind: safemeet_net::Refusal, n: u64) {
        if n == 0 {
            return;
        }
        self.network_refused
            .get_or_create(&Reason {
                reason: kind.label(),
            })
            .inc_by(n);
    }

    /// Counts envelopes removed on expiry.
    pub fn purged(&self, n: usize) {
        self.purged.inc_by(n as u64);
    }

    /// Records what the relay holds now.
    pub fn holding(&self, totals: &Totals) {
        self.envelopes.set(gauge(totals.envelopes));
        self.bytes.set(gauge(totals.bytes));
        self.mailboxes.set(gauge(totals.mailboxes));
        if let Ok(mut s) = self.status.lock() {
            s.envelopes = totals.envelopes;
            s.bytes = totals.bytes;
            s.mailboxes = totals.mailboxes;
        }
    }

    fn status_json(&self) -> String {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        serde_json::to_string(&status).unwrap_or_else(|_| "{}".into())
    }
}

/// Longest a metrics client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request read.
const MAX_REQUEST: usize = 4096;
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// backs off instead of spinning while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `/metrics` and `/status` on `listener` to the addresses in
/// `allow` until `cancel` fires; others are closed without an answer.
pub async fn serve(
    listener: TcpListener,
    allow: Vec<IpAddr>,
    registry: Arc<Registry>,
    metrics: RelayMetrics,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if !allowed(&allow, peer) {
            continue;
        }
        let (registry, metrics) = (registry.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut len = 0;
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                while len < buf.len() {
                    match socket.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            len += n;
                            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) = match path {
                "/metrics" => {
                    let mut text = String::new();
                    match encode(&mut text, &registry) {
                        Ok(()) => (
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ),
                        Err(_) => ("500 Internal Server Error", "text/plain", String::new()),
                    }
                }
                "/status" => ("200 OK", "application/json", metrics.status_json()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

fn allowed(allow: &[IpAddr], peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    allow.contains(&ip)
}
