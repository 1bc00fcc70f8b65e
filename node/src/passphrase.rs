//! Where the passphrase comes from: `--passphrase-file`, then
//! `SAFEMEET_PASSPHRASE`, then a prompt on the terminal; and how strong a
//! new one must be.
//!
//! `SAFEMEET_PASSPHRASE` is taken out of the process as soon as `main`
//! starts ([`take_from_env`]): a long-running daemon would otherwise show
//! it in `/proc/PID/environ` to every process of the same user for as long
//! as it runs, and pass it on to anything it starts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safemeet_crypto::at_rest::Passphrase;

use crate::failure::Failure;

/// Shortest passphrase accepted for a new account. Argon2id slows guessing;
/// it cannot save a three-letter passphrase.
const MIN_NEW_PASSPHRASE_CHARS: usize = 8;

/// Least zxcvbn score (0–4) of a new passphrase: 3 means about 10^8 to
/// 10^10 guesses, which at the key file's Argon2id cost (about 0.2 s a
/// guess on one core) is centuries of one core's time, and years of a
/// thousand cores'. Scores 0–2 fall to a dictionary attack in days.
const MIN_NEW_PASSPHRASE_SCORE: zxcvbn::Score = zxcvbn::Score::Three;

/// The environment variable a passphrase may come from.
const PASSPHRASE_VAR: &str = "SAFEMEET_PASSPHRASE";

/// Largest passphrase file read (a passphrase, not a document).
const MAX_PASSPHRASE_FILE_BYTES: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Source {
    file: Option<PathBuf>,
    /// `SAFEMEET_PASSPHRASE`, as [`take_from_env`] took it.
    env: Option<Passphrase>,
}

impl Source {
    pub(crate) fn new(file: Option<PathBuf>, env: Option<Passphrase>) -> Self {
        Self { file, env }
    }

    /// A source that answers with `passphrase` (one just set).
    pub(crate) fn given(passphrase: Passphrase) -> Self {
        Self {
            file: None,
            env: Some(passphrase),
        }
    }

    /// The passphrase of an existing profile.
    pub(crate) fn existing(&self) -> Result<Passphrase, Failure> {
        self.read("Passphrase: ", false)
    }

    /// A passphrase for a new profile: checked for length and strength
    /// ([`check_strength`]), confirmed when typed. `about_user` are the
    /// account's names and addresses, which a guesser would try first.
    pub(crate) fn new_passphrase(&self, about_user: &[&str]) -> Result<Passphrase, Failure> {
        let p = self.read("New passphrase: ", true)?;
        check_strength(&p, about_user)?;
        Ok(p)
    }

    fn read(&self, prompt: &str, confirm: bool) -> Result<Passphrase, Failure> {
        if let Some(path) = &self.file {
            return read_file(path);
        }
        if let Some(p) = &self.env {
            return non_empty(Passphrase::new(p.expose()));
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

/// Refuses a passphrase for a new profile that is short or easy to guess,
/// with zxcvbn's reasons and suggestions in the message.
pub(crate) fn check_strength(p: &Passphrase, about_user: &[&str]) -> Result<(), Failure> {
    if p.expose().chars().count() < MIN_NEW_PASSPHRASE_CHARS {
        return Err(Failure::Usage(format!(
            "the passphrase must have at least {MIN_NEW_PASSPHRASE_CHARS} characters"
        )));
    }
    let estimate = zxcvbn::zxcvbn(p.expose(), about_user);
    if estimate.score() >= MIN_NEW_PASSPHRASE_SCORE {
        return Ok(());
    }
    let mut why = format!(
        "the passphrase is too easy to guess (strength {} of 4; at least {} is needed)",
        u8::from(estimate.score()),
        u8::from(MIN_NEW_PASSPHRASE_SCORE)
    );
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            why.push_str(&format!(": {warning}"));
        }
        for s in feedback.suggestions() {
            why.push_str(&format!(" {s}"));
        }
    }
    if !why.ends_with('.') {
        why.push('.');
    }
    why.push_str(" Several uncommon words, or a longer phrase, make a strong passphrase.");
    Err(Failure::Usage(why))
}

/// Takes `SAFEMEET_PASSPHRASE` out of this process: returns its value, and
/// wipes it from the environment and from the process's initial
/// environment block, which `/proc/PID/environ` shows. Call it first thing
/// in `main`, while the process has one thread.
///
/// Removing a variable (`unsetenv`) only unlinks it: its text stays in the
/// initial block, so the text itself is overwritten with zeros, through
/// `/proc/self/mem`. The entry becomes an empty string, which `getenv`
/// and Rust's `std::env` skip. Where that fails (no procfs), the
/// passphrase is still returned with the error, for the caller to log
/// once logging is set up.
pub(crate) fn take_from_env() -> (Option<Passphrase>, Option<std::io::Error>) {
    let Some(value) = std::env::var_os(PASSPHRASE_VAR) else {
        return (None, None);
    };
    let passphrase = match value.into_string() {
        Ok(text) => Passphrase::new(text),
        Err(_) => Passphrase::new(String::new()),
    };
    (Some(passphrase), wipe_from_environ(PASSPHRASE_VAR).err())
}

/// Overwrites every `NAME=value` entry of the process's initial environment
/// block with zeros.
fn wipe_from_environ(name: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    // Fields 50 and 51 of /proc/self/stat (proc(5)): where the block starts
    // and ends. The name field (2) may hold spaces: count after its ')'.
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rsplit_once(')')
        .ok_or_else(|| bad("no ')' in stat"))?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3.
    let field = |n: usize| -> std::io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("stat has no environment bounds"))
    };
    let (start, end) = (field(50)?, field(51)?);
    let len = usize::try_from(end.saturating_sub(start)).map_err(|_| bad("block too large"))?;
    if len == 0 || len > MAX_ENVIRON_BYTES {
        return Err(bad("unexpected environment block size"));
    }
    let mut mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut block = zeroize::Zeroizing::new(vec![0u8; len]);
    mem.seek(SeekFrom::Start(start))?;
    mem.read_exact(&mut block)?;
    let prefix = format!("{name}=");
    let mut at = 0;
    for entry in block.split(|b| *b == 0) {
        if entry.starts_with(prefix.as_bytes()) {
            let offset = u64::try_from(at).map_err(|_| bad("offset"))?;
            mem.seek(SeekFrom::Start(start + offset))?;
            mem.write_all(&vec![0u8; entry.len()])?;
        }
        at += entry.len() + 1;
    }
    Ok(())
}

/// Largest initial environment block handled (Linux caps argv and envp
/// together at a quarter of the stack limit, 2 MiB with the usual 8 MiB).
const MAX_ENVIRON_BYTES: usize = 4 << 20;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn weak_passphrases_are_refused_with_a_reason() {
        for weak in [
            "password1",
            "qwertyuiop",
            "alice2026!",
            "12345678",
            "letmein2020",
        ] {
            let err = check_strength(&Passphrase::new(weak), &["alice"]).unwrap_err();
            let Failure::Usage(msg) = err else {
                panic!("{weak}: not a usage error")
            };
            assert!(msg.contains("too easy to guess"), "{weak}: {msg}");
        }
        let short = check_strength(&Passphrase::new("x7#Qz"), &[]).unwrap_err();
        assert!(matches!(short, Failure::Usage(m) if m.contains("at least 8 characters")));
    }

    #[test]
    fn the_users_own_names_do_not_make_a_passphrase() {
        let name = "vbqkzrtmwphy";
        assert!(check_strength(&Passphrase::new(name), &[]).is_ok());
        assert!(check_strength(&Passphrase::new(name), &[name]).is_err());
    }

    #[test]
    fn strong_passphrases_pass() {
        for strong in [
            "seven tall giraffes drink tea",
            "velvet comet harbour quietly",
            "Tr4m-kettle-Orbit-91",
        ] {
            check_strength(&Passphrase::new(strong), &["alice"]).unwrap();
        }
    }
}
