//! The commands. Each prints a human line by default and one JSON object
//! with `--json`.

use anyhow::Context;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::Passphrase;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DisplayName, Email, Username};
use safemeet_store::Keyspace;
use serde::Serialize;

use crate::failure::Failure;
use crate::home::{Home, ProfileStore};
use crate::passphrase::Source;

/// Identifier of the account record in [`Keyspace::Account`].
const ACCOUNT_RECORD: &[u8] = b"account";

/// What `init` and `whoami` print.
#[derive(Debug, Serialize)]
struct Identity {
    user_id: String,
    device_id: String,
    peer_id: String,
    username: String,
    display_name: String,
    emails: Vec<String>,
}

impl Identity {
    fn of(account: &Account) -> Self {
        let profile = account.profile();
        Self {
            user_id: account.user_id().to_string(),
            device_id: account.device_id().to_string(),
            peer_id: account.peer_id().to_string(),
            username: profile.username.as_str().to_owned(),
            display_name: profile.display_name.as_str().to_owned(),
            emails: profile
                .emails
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
        }
    }

    fn print(&self, json: bool) -> Result<(), Failure> {
        if json {
            println!("{}", serde_json::to_string(self).context("encoding JSON")?);
        } else {
            println!("user id:      {}", self.user_id);
            println!("device id:    {}", self.device_id);
            println!("peer id:      {}", self.peer_id);
            println!("username:     {}", self.username);
            println!("display name: {}", self.display_name);
            for e in &self.emails {
                println!("e-mail:       {e}");
            }
        }
        Ok(())
    }
}

pub(crate) fn init(
    home: &Home,
    source: &Source,
    json: bool,
    username: Username,
    display_name: Option<DisplayName>,
    emails: Vec<Email>,
) -> Result<(), Failure> {
    let (identity, _passphrase) = create(home, source, username, display_name, emails)?;
    identity.print(json)
}

/// Creates the account; answers who it is and the passphrase it is sealed
/// under.
fn create(
    home: &Home,
    source: &Source,
    username: Username,
    display_name: Option<DisplayName>,
    emails: Vec<Email>,
) -> Result<(Identity, Passphrase), Failure> {
    // Checked again under the init lock in `Home::create`; this early check
    // only spares the user typing a passphrase for nothing.
    if home.has_account() {
        return Err(home.account_exists());
    }
    if emails.len() > safemeet_proto::limits::MAX_EMAILS {
        return Err(Failure::Usage(format!(
            "at most {} e-mail addresses",
            safemeet_proto::limits::MAX_EMAILS
        )));
    }
    let display_name = match display_name {
        Some(d) => d,
        None => DisplayName::new(username.as_str()).context("username as display name")?,
    };
    let mut about_user = vec![username.as_str(), display_name.as_str()];
    about_user.extend(emails.iter().map(|e| e.as_str()));
    let passphrase = source.new_passphrase(&about_user)?;
    let account = Account::create(username, display_name, emails, SystemClock.now())?;
    let log = home.create(&passphrase, |store| {
        let record = account.to_record()?;
        store.put(Keyspace::Account, ACCOUNT_RECORD, &record)?;
        Ok(())
    })?;
    log.record("account_created", Some(account.user_id().to_string()));
    tracing::info!("account created");
    Ok((Identity::of(&account), passphrase))
}

/// `safemeet up`: an account if there is none, then the daemon.
pub(crate) fn up(
    home: &Home,
    source: &Source,
    json: bool,
    username: Option<Username>,
    display_name: Option<DisplayName>,
    mut network: crate::daemon::Network,
) -> Result<(), Failure> {
    network.greet = !json;
    if home.has_account() {
        if username.is_some() || display_name.is_some() {
            tracing::info!("an account exists here: --username and --display-name are not used");
        }
        return crate::daemon::daemon(home, source, json, network);
    }
    let username = match username {
        Some(u) => u,
        None => ask_username()?,
    };
    if !json {
        println!("Creating an account in {}.", home.dir().display());
    }
    let (identity, passphrase) = create(home, source, username, display_name, Vec::new())?;
    if json {
        crate::messenger::print_json(&serde_json::json!({ "created": identity }))?;
    } else {
        println!("Account created: you are {}.", identity.username);
    }
    // The passphrase just set opens it: not asked for again.
    let source = Source::given(passphrase);
    crate::daemon::daemon(home, &source, json, network)
}

/// Asks for a username on the terminal.
fn ask_username() -> Result<Username, Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "no account here yet: pass --username NAME to create one (no terminal to ask on)"
                .into(),
        ));
    }
    loop {
        print!("Username (a-z, 0-9, '.', '_', '-'): ");
        std::io::stdout().flush().context("writing the prompt")?;
        let mut line = String::new();
        if std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the username")?
            == 0
        {
            return Err(Failure::Usage("no username given".into()));
        }
        match line.trim().parse::<Username>() {
            Ok(u) => return Ok(u),
            Err(e) => println!("{e}"),
        }
    }
}

pub(crate) fn whoami(home: &Home, source: &Source, json: bool) -> Result<(), Failure> {
    home.require_account()?;
    let (store, _log) = home.unlock(&source.existing()?)?;
    let account = load_account(&store)?;
    Identity::of(&account).print(json)
}

fn load_account(store: &ProfileStore) -> Result<Account, Failure> {
    let record = store
        .get(Keyspace::Account, ACCOUNT_RECORD)?
        .ok_or_else(|| Failure::Other(anyhow::anyhow!("the store holds no account record")))?;
    Ok(Account::from_record(&record)?)
}
