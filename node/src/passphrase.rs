//! Where the passphrase comes from: `--passphrase-file`, then
//! `SAFEMEET_PASSPHRASE`, then a prompt on the terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safemeet_crypto::at_rest::Passphrase;

use crate::failure::Failure;

/// Shortest passphrase accepted for a new account. Argon2id slows guessing;
/// it cannot save a three-letter passphrase.
const MIN_NEW_PASSPHRASE_CHARS: usize = 8;

/// Largest passphrase file read (a passphrase, not a document).
const MAX_PASSPHRASE_FILE_BYTES: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Source {
    file: Option<PathBuf>,
}

impl Source {
    pub(crate) fn new(file: Option<PathBuf>) -> Self {
        Self { file }
    }

    /// The passphrase of an existing profile.
    pub(crate) fn existing(&self) -> Result<Passphrase, Failure> {
        self.read("Passphrase: ", false)
    }

    /// A passphrase for a new profile: checked for length, confirmed when typed.
    pub(crate) fn new_passphrase(&self) -> Result<Passphrase, Failure> {
        let p = self.read("New passphrase: ", true)?;
        if p.expose().chars().count() < MIN_NEW_PASSPHRASE_CHARS {
            return Err(Failure::Usage(format!(
                "the passphrase must have at least {MIN_NEW_PASSPHRASE_CHARS} characters"
            )));
        }
        Ok(p)
    }

    fn read(&self, prompt: &str, confirm: bool) -> Result<Passphrase, Failure> {
        if let Some(path) = &self.file {
            return read_file(path);
        }
        if let Ok(p) = std::env::var("SAFEMEET_PASSPHRASE") {
            return non_empty(Passphrase::new(p));
        }
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "no passphrase: pass --passphrase-file FILE or set SAFEMEET_PASSPHRASE (no terminal to prompt on)".into(),
            ));
        }
        let first =
            Passphrase::new(rpassword::prompt_password(prompt).context("reading the passphrase")?);
        if confirm {
            let again = Passphrase::new(
                rpassword::prompt_password("Repeat passphrase: ")
                    .context("reading the passphrase")?,
            );
            if again.expose() != first.expose() {
                return Err(Failure::Usage("the passphrases do not match".into()));
            }
        }
        non_empty(first)
    }
}

fn read_file(path: &Path) -> Result<Passphrase, Failure> {
    let text = crate::home::read_bounded(path, MAX_PASSPHRASE_FILE_BYTES)
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    // The first line is the passphrase; its line ending is not part of it.
    let line = text.lines().next().unwrap_or("");
    non_empty(Passphrase::new(line))
}

fn non_empty(p: Passphrase) -> Result<Passphrase, Failure> {
    if p.expose().is_empty() {
        return Err(Failure::Usage("the passphrase is empty".into()));
    }
    Ok(p)
}
