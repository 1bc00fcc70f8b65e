//! Two identities, their device certificates, and a forgery that fails.
//!
//! Run with `cargo run -p safemeet-examples --bin device-certificates`.
//!
//! Alice and Bob each create an account (a master key and a first device).
//! Each device certificate verifies against its owner's user id. Then
//! Mallory tries three forgeries: presenting Alice's certificate as Bob's,
//! swapping his own libp2p peer id into Alice's certificate, and relabelling
//! his own certificate with Alice's user id. Each is refused: the first as
//! a certificate of another user, the other two as bad signatures.

use anyhow::{Context, bail};
use safemeet_crypto::account::Account;
use safemeet_crypto::certificate;
use safemeet_crypto::identity::{DeviceKeys, MasterKey};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::identity::{DeviceCertificate, Signed};
use safemeet_proto::{DisplayName, Username, codec};

fn create(name: &str, display: &str) -> anyhow::Result<Account> {
    Ok(Account::create(
        Username::new(name)?,
        DisplayName::new(display)?,
        vec![],
        SystemClock.now(),
    )?)
}

fn expect_refused(
    label: &str,
    result: Result<impl Sized, safemeet_crypto::Error>,
) -> anyhow::Result<()> {
    match result {
        Ok(_) => bail!("{label}: forgery was ACCEPTED"),
        Err(e) => {
            println!("refused   {label}: {e}");
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let alice = create("alice", "Alice")?;
    let bob = create("bob", "Bob")?;

    for (name, account) in [("alice", &alice), ("bob", &bob)] {
        let cert =
            certificate::verify_device_certificate(account.certificate(), &account.user_id())
                .with_context(|| format!("{name}'s own certificate"))?;
        println!(
            "verified  {name}: user {} device {} peer {}",
            account.user_id(),
            cert.device_id,
            account.peer_id()
        );
    }

    // 1. Alice's certificate offered as one of Bob's devices.
    expect_refused(
        "alice's certificate as bob's",
        certificate::verify_device_certificate(alice.certificate(), &bob.user_id()),
    )?;

    // 2. Mallory puts his peer id into Alice's certificate to receive her traffic.
    let mallory_device = DeviceKeys::generate();
    let mut body: DeviceCertificate = alice.certificate().decode_body()?;
    body.peer_id = mallory_device.peer_id().to_bytes();
    let tampered = Signed::from_parts(codec::encode(&body)?, alice.certificate().signature);
    expect_refused(
        "alice's certificate with mallory's peer id",
        certificate::verify_device_certificate(&tampered, &alice.user_id()),
    )?;

    // 3. Mallory certifies his own device with his own master key, then claims Alice's user id.
    let mallory = MasterKey::generate();
    let own = certificate::issue_device_certificate(&mallory, &mallory_device, SystemClock.now())?;
    let mut body: DeviceCertificate = own.decode_body()?;
    body.user_id = alice.user_id();
    let relabelled = Signed::from_parts(codec::encode(&body)?, own.signature);
    expect_refused(
        "mallory's certificate relabelled as alice's",
        certificate::verify_device_certificate(&relabelled, &alice.user_id()),
    )?;

    println!("all forgeries refused");
    Ok(())
}
