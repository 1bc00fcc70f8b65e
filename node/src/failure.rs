//! Command failures: a stable code, an exit status and a message.

use std::fmt;

/// Why a command failed. Codes and exit statuses are part of the CLI's
/// interface (docs/cli.md): scripts may rely on them.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad input the parser could not catch (exit 2).
    Usage(String),
    /// The passphrase does not unlock the profile (exit 3).
    WrongPassphrase,
    /// No account in this profile (exit 4).
    NoAccount(String),
    /// `init` on a profile that already has an account (exit 5).
    AccountExists(String),
    /// Another process (a daemon) has the store open (exit 6).
    Locked(String),
    /// Anything else (exit 1).
    Other(anyhow::Error),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::WrongPassphrase => 3,
            Failure::NoAccount(_) => 4,
            Failure::AccountExists(_) => 5,
            Failure::Locked(_) => 6,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Failure::Other(_) => "error",
            Failure::Usage(_) => "usage",
            Failure::WrongPassphrase => "wrong_passphrase",
            Failure::NoAccount(_) => "no_account",
            Failure::AccountExists(_) => "account_exists",
            Failure::Locked(_) => "locked",
        }
    }

    /// Prints the failure on stderr, as JSON with `--json`.
    pub(crate) fn report(&self, json: bool) {
        if json {
            let v = serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
            eprintln!("{v}");
        } else {
            eprintln!("safemeet: {self}");
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m)
            | Failure::NoAccount(m)
            | Failure::AccountExists(m)
            | Failure::Locked(m) => f.write_str(m),
            Failure::WrongPassphrase => f.write_str(
                "wrong passphrase: the profile was not unlocked and nothing was changed",
            ),
            Failure::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<safemeet_crypto::Error> for Failure {
    fn from(e: safemeet_crypto::Error) -> Self {
        match e {
            safemeet_crypto::Error::WrongPassphrase => Failure::WrongPassphrase,
            safemeet_crypto::Error::Store(s) => s.into(),
            other => Failure::Other(other.into()),
        }
    }
}

impl From<safemeet_store::Error> for Failure {
    fn from(e: safemeet_store::Error) -> Self {
        match e {
            e @ safemeet_store::Error::Locked { .. } => Failure::Locked(e.to_string()),
            other => Failure::Other(other.into()),
        }
    }
}
