#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

//! SAS device verification: two honest sides agree and finish, a man in the
//! middle shows up as differing strings, and every bad or misplaced message
//! is refused with its own error and cancels the flow.

use std::sync::LazyLock;

use proptest::prelude::*;
use safemeet_crypto::account::Account;
use safemeet_crypto::certificate;
use safemeet_crypto::verification::{DeviceIdentity, SasFlow, SasState, VerificationError};
use safemeet_proto::event::{CancelReason, Verification, VerificationStep};
use safemeet_proto::{DisplayName, Timestamp, Username};
use vodozemac::sas::Sas;

fn identity(name: &str) -> DeviceIdentity {
    let now = Timestamp::from_millis(1_700_000_000_000).unwrap();
    let account = Account::create(
        Username::new(name).unwrap(),
        DisplayName::new(name).unwrap(),
        vec![],
        now,
    )
    .unwrap();
    let cert =
        certificate::verify_device_certificate(account.certificate(), &account.user_id()).unwrap();
    let id = DeviceIdentity::from(&cert);
    assert_eq!(
        &id.ed25519_key,
        account.device_keys().olm.ed25519_key().as_bytes()
    );
    id
}

static ALICE: LazyLock<DeviceIdentity> = LazyLock::new(|| identity("alice"));
static BOB: LazyLock<DeviceIdentity> = LazyLock::new(|| identity("bob"));
static MALLORY: LazyLock<DeviceIdentity> = LazyLock::new(|| identity("mallory"));

fn alice() -> DeviceIdentity {
    ALICE.clone()
}

fn bob() -> DeviceIdentity {
    BOB.clone()
}

/// Alice starts verifying Bob; both run honestly until both keys are known.
fn exchanged() -> (SasFlow, SasFlow) {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    assert_eq!(alice_flow.state(), SasState::Started);
    let (mut bob_flow, accept) = SasFlow::respond(bob(), alice(), &start).unwrap();
    assert_eq!(bob_flow.state(), SasState::Accepted);
    assert_eq!(bob_flow.flow_id(), alice_flow.flow_id());

    let alice_key = alice_flow.receive(&accept).unwrap().unwrap();
    assert_eq!(alice_flow.state(), SasState::Accepted);
    assert!(alice_flow.short_auth_string().is_none());
    let bob_key = bob_flow.receive(&alice_key).unwrap().unwrap();
    assert_eq!(bob_flow.state(), SasState::KeysExchanged);
    assert_eq!(alice_flow.receive(&bob_key).unwrap(), None);
    assert_eq!(alice_flow.state(), SasState::KeysExchanged);
    (alice_flow, bob_flow)
}

fn message(flow_id: [u8; 16], step: VerificationStep) -> Verification {
    Verification {
        version: 1,
        flow_id,
        step,
    }
}

fn assert_cancelled(flow: &SasFlow, reason: CancelReason) {
    assert_eq!(flow.state(), SasState::Cancelled(reason));
    assert!(flow.verified_device().is_none());
    assert!(flow.short_auth_string().is_none());
}

#[test]
fn both_sides_see_the_same_string() {
    let (alice_flow, bob_flow) = exchanged();
    let a = alice_flow.short_auth_string().unwrap();
    let b = bob_flow.short_auth_string().unwrap();
    assert_eq!(a.emoji, b.emoji);
    assert_eq!(a.decimals, b.decimals);
    assert!(a.decimals.iter().all(|d| (1000..=9191).contains(d)));

    let shown = a.to_string();
    for e in &a.emoji {
        assert!(
            shown.contains(e.symbol) && shown.contains(e.name),
            "{shown}"
        );
    }
    let [x, y, z] = a.decimals;
    assert!(shown.ends_with(&format!("\n{x} {y} {z}")), "{shown}");
}

#[test]
fn two_runs_give_different_strings() {
    let (first, _) = exchanged();
    let (second, _) = exchanged();
    assert_ne!(first.flow_id(), second.flow_id());
    assert_ne!(
        first.short_auth_string().unwrap().decimals,
        second.short_auth_string().unwrap().decimals
    );
}

#[test]
fn macs_received_after_own_confirmation_finish_both_sides() {
    let (mut alice_flow, mut bob_flow) = exchanged();
    let alice_mac = alice_flow.confirm().unwrap();
    let bob_mac = bob_flow.confirm().unwrap();
    assert_eq!(alice_flow.state(), SasState::Confirmed);
    assert_eq!(bob_flow.state(), SasState::Confirmed);
    assert!(alice_flow.verified_device().is_none());

    assert_eq!(bob_flow.receive(&alice_mac).unwrap(), None);
    assert_eq!(alice_flow.receive(&bob_mac).unwrap(), None);
    assert_eq!(alice_flow.state(), SasState::Done);
    assert_eq!(bob_flow.state(), SasState::Done);
    assert_eq!(alice_flow.verified_device(), Some(&bob()));
    assert_eq!(bob_flow.verified_device(), Some(&alice()));
    // The string stays available for the record.
    assert!(alice_flow.short_auth_string().is_some());
}

#[test]
fn a_mac_received_before_own_confirmation_waits_for_the_user() {
    let (mut alice_flow, mut bob_flow) = exchanged();
    let alice_mac = alice_flow.confirm().unwrap();

    bob_flow.receive(&alice_mac).unwrap();
    assert_eq!(bob_flow.state(), SasState::KeysExchanged);
    assert!(bob_flow.verified_device().is_none());

    let bob_mac = bob_flow.confirm().unwrap();
    assert_eq!(bob_flow.state(), SasState::Done);
    assert_eq!(bob_flow.verified_device(), Some(&alice()));

    alice_flow.receive(&bob_mac).unwrap();
    assert_eq!(alice_flow.state(), SasState::Done);
    assert_eq!(alice_flow.verified_device(), Some(&bob()));
}

#[test]
fn a_done_flow_stays_done_and_refuses_more_messages() {
    let (mut alice_flow, mut bob_flow) = exchanged();
    alice_flow.confirm().unwrap();
    let bob_mac = bob_flow.confirm().unwrap();
    alice_flow.receive(&bob_mac).unwrap();

    assert!(matches!(
        alice_flow.receive(&bob_mac),
        Err(VerificationError::UnexpectedStep)
    ));
    let cancel = message(
        alice_flow.flow_id(),
        VerificationStep::Cancel {
            reason: CancelReason::Timeout,
        },
    );
    assert!(matches!(
        alice_flow.receive(&cancel),
        Err(VerificationError::UnexpectedStep)
    ));
    assert!(matches!(
        alice_flow.confirm(),
        Err(VerificationError::CannotConfirm(SasState::Done))
    ));
    assert_eq!(alice_flow.verified_device(), Some(&bob()));
}

/// Mallory sits between Alice and Bob. She answers Alice's `Start` as Bob
/// (with her own ephemeral key, committed to properly) and forwards the
/// `Start` to Bob, to whom she shows a second ephemeral key as Alice.
struct Mitm {
    alice: SasFlow,
    bob: SasFlow,
    /// Mallory's flow towards Alice.
    mallory: SasFlow,
}

fn mitm() -> Mitm {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let (mut mallory, accept_from_mallory) = SasFlow::respond(bob(), alice(), &start).unwrap();
    let (mut bob_flow, _accept_from_bob) = SasFlow::respond(bob(), alice(), &start).unwrap();
    let mallory_key_for_bob = Sas::new().public_key();

    let alice_key = alice_flow.receive(&accept_from_mallory).unwrap().unwrap();
    let mallory_key_for_alice = mallory.receive(&alice_key).unwrap().unwrap();
    let _bob_key = bob_flow
        .receive(&message(
            start.flow_id,
            VerificationStep::Key {
                key: mallory_key_for_bob.to_bytes(),
            },
        ))
        .unwrap()
        .unwrap();
    // Mallory's key matches her commitment, so Alice sees nothing wrong yet.
    alice_flow.receive(&mallory_key_for_alice).unwrap();
    assert_eq!(alice_flow.state(), SasState::KeysExchanged);
    assert_eq!(bob_flow.state(), SasState::KeysExchanged);
    Mitm {
        alice: alice_flow,
        bob: bob_flow,
        mallory,
    }
}

#[test]
fn a_man_in_the_middle_shows_as_different_strings() {
    let m = mitm();
    let a = m.alice.short_auth_string().unwrap();
    let b = m.bob.short_auth_string().unwrap();
    assert_ne!(a.emoji, b.emoji);
    assert_ne!(a.decimals, b.decimals);
    // Mallory knows the string each side shows; she just cannot make them equal.
    assert_eq!(m.mallory.short_auth_string(), Some(a));
}

#[test]
fn macs_relayed_by_a_man_in_the_middle_fail_even_after_wrong_confirmations() {
    let mut m = mitm();
    let alice_mac = m.alice.confirm().unwrap();
    let bob_mac = m.bob.confirm().unwrap();

    assert!(matches!(
        m.bob.receive(&alice_mac),
        Err(VerificationError::BadMac)
    ));
    assert!(matches!(
        m.alice.receive(&bob_mac),
        Err(VerificationError::BadMac)
    ));
    assert_cancelled(&m.alice, CancelReason::BadMac);
    assert_cancelled(&m.bob, CancelReason::BadMac);
    assert_eq!(
        m.alice.cancel(CancelReason::User).step,
        VerificationStep::Cancel {
            reason: CancelReason::BadMac
        }
    );
}

/// The MACs are keyed by the ephemeral secret, which Mallory shares with
/// each side, so she can make MACs for Bob's public identity herself. Only
/// the users' comparison of the strings stops her: this pins that limit so
/// nobody reads more into the MACs than they give.
#[test]
fn macs_do_not_replace_the_comparison() {
    let mut m = mitm();
    m.alice.confirm().unwrap();
    let forged = m.mallory.confirm().unwrap();
    m.alice.receive(&forged).unwrap();
    assert_eq!(m.alice.state(), SasState::Done);
}

#[test]
fn a_key_other_than_the_committed_one_is_a_bad_commitment() {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let (mut bob_flow, accept) = SasFlow::respond(bob(), alice(), &start).unwrap();
    let alice_key = alice_flow.receive(&accept).unwrap().unwrap();
    bob_flow.receive(&alice_key).unwrap().unwrap();

    let other = message(
        start.flow_id,
        VerificationStep::Key {
            key: Sas::new().public_key().to_bytes(),
        },
    );
    assert!(matches!(
        alice_flow.receive(&other),
        Err(VerificationError::BadCommitment)
    ));
    assert_cancelled(&alice_flow, CancelReason::BadCommitment);
    let cancel = alice_flow.cancel(CancelReason::User);
    assert_eq!(
        cancel,
        message(
            start.flow_id,
            VerificationStep::Cancel {
                reason: CancelReason::BadCommitment
            }
        )
    );
    assert!(matches!(
        bob_flow.receive(&cancel),
        Err(VerificationError::CancelledByThem(
            CancelReason::BadCommitment
        ))
    ));
    assert_cancelled(&bob_flow, CancelReason::BadCommitment);
}

#[test]
fn sides_that_disagree_about_an_identity_are_caught() {
    // Bob was handed Mallory's certificate as "Alice's device".
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let (mut bob_flow, accept) = SasFlow::respond(bob(), MALLORY.clone(), &start).unwrap();
    let alice_key = alice_flow.receive(&accept).unwrap().unwrap();
    let bob_key = bob_flow.receive(&alice_key).unwrap().unwrap();
    assert!(matches!(
        alice_flow.receive(&bob_key),
        Err(VerificationError::BadCommitment)
    ));
}

#[test]
fn swapped_or_foreign_macs_are_refused() {
    let (mut alice_flow, mut bob_flow) = exchanged();
    let Verification {
        step: VerificationStep::Mac {
            device_key,
            master_key,
        },
        ..
    } = alice_flow.confirm().unwrap()
    else {
        panic!("confirm gives a Mac");
    };
    let swapped = message(
        alice_flow.flow_id(),
        VerificationStep::Mac {
            device_key: master_key,
            master_key: device_key,
        },
    );
    assert!(matches!(
        bob_flow.receive(&swapped),
        Err(VerificationError::BadMac)
    ));
    assert_cancelled(&bob_flow, CancelReason::BadMac);

    // A Mac from another verification between the same two devices, moved
    // into this flow.
    let (mut other_alice, _) = exchanged();
    let (_, mut bob_flow) = exchanged();
    let mut moved = other_alice.confirm().unwrap();
    moved.flow_id = bob_flow.flow_id();
    assert!(matches!(
        bob_flow.receive(&moved),
        Err(VerificationError::BadMac)
    ));
}

#[test]
fn steps_out_of_order_cancel_the_flow() {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let early_key = message(start.flow_id, VerificationStep::Key { key: [9; 32] });
    assert!(matches!(
        alice_flow.receive(&early_key),
        Err(VerificationError::UnexpectedStep)
    ));
    assert_cancelled(&alice_flow, CancelReason::UnexpectedStep);
    assert!(matches!(
        alice_flow.receive(&early_key),
        Err(VerificationError::Cancelled(CancelReason::UnexpectedStep))
    ));
    assert!(matches!(
        alice_flow.confirm(),
        Err(VerificationError::Cancelled(CancelReason::UnexpectedStep))
    ));

    for step in [
        VerificationStep::Start,
        VerificationStep::Accept {
            commitment: [1; 32],
        },
        VerificationStep::Mac {
            device_key: [2; 32],
            master_key: [3; 32],
        },
    ] {
        let (mut bob_flow, _) = SasFlow::respond(bob(), alice(), &start).unwrap();
        assert!(matches!(
            bob_flow.receive(&message(start.flow_id, step)),
            Err(VerificationError::UnexpectedStep)
        ));
        assert_cancelled(&bob_flow, CancelReason::UnexpectedStep);
    }

    // A second Mac after a good one.
    let (mut alice_flow, mut bob_flow) = exchanged();
    let alice_mac = alice_flow.confirm().unwrap();
    bob_flow.receive(&alice_mac).unwrap();
    assert!(matches!(
        bob_flow.receive(&alice_mac),
        Err(VerificationError::UnexpectedStep)
    ));
    assert_cancelled(&bob_flow, CancelReason::UnexpectedStep);
}

#[test]
fn confirming_too_early_or_twice_is_refused_without_cancelling() {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    assert!(matches!(
        alice_flow.confirm(),
        Err(VerificationError::CannotConfirm(SasState::Started))
    ));
    assert_eq!(alice_flow.state(), SasState::Started);
    let (mut bob_flow, _) = SasFlow::respond(bob(), alice(), &start).unwrap();
    assert!(matches!(
        bob_flow.confirm(),
        Err(VerificationError::CannotConfirm(SasState::Accepted))
    ));

    let (mut alice_flow, _) = exchanged();
    alice_flow.confirm().unwrap();
    assert!(matches!(
        alice_flow.confirm(),
        Err(VerificationError::CannotConfirm(SasState::Confirmed))
    ));
    assert_eq!(alice_flow.state(), SasState::Confirmed);
}

#[test]
fn wrong_flow_or_version_cancels() {
    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let (_, mut accept) = SasFlow::respond(bob(), alice(), &start).unwrap();
    accept.flow_id[0] ^= 1;
    assert!(matches!(
        alice_flow.receive(&accept),
        Err(VerificationError::WrongFlow)
    ));
    assert_cancelled(&alice_flow, CancelReason::UnexpectedStep);

    let (mut alice_flow, start) = SasFlow::start(alice(), bob());
    let (_, mut accept) = SasFlow::respond(bob(), alice(), &start).unwrap();
    accept.version = 2;
    assert!(matches!(
        alice_flow.receive(&accept),
        Err(VerificationError::UnsupportedVersion(2))
    ));
    assert_cancelled(&alice_flow, CancelReason::UnexpectedStep);
}

#[test]
fn respond_refuses_anything_but_a_version_1_start() {
    let (_, start) = SasFlow::start(alice(), bob());
    let mut newer = start.clone();
    newer.version = 7;
    assert!(matches!(
        SasFlow::respond(bob(), alice(), &newer),
        Err(VerificationError::UnsupportedVersion(7))
    ));
    let key = message(start.flow_id, VerificationStep::Key { key: [5; 32] });
    assert!(matches!(
        SasFlow::respond(bob(), alice(), &key),
        Err(VerificationError::UnexpectedStep)
    ));
}

#[test]
fn a_low_order_key_is_invalid() {
    let (_, start) = SasFlow::start(alice(), bob());
    let (mut bob_flow, _) = SasFlow::respond(bob(), alice(), &start).unwrap();
    let zero = message(start.flow_id, VerificationStep::Key { key: [0; 32] });
    assert!(matches!(
        bob_flow.receive(&zero),
        Err(VerificationError::InvalidKey)
    ));
    assert!(matches!(bob_flow.state(), SasState::Cancelled(_)));
}

#[test]
fn a_user_mismatch_cancels_both_sides() {
    let (mut alice_flow, mut bob_flow) = exchanged();
    let cancel = alice_flow.cancel(CancelReason::Mismatch);
    assert_eq!(
        cancel,
        message(
            alice_flow.flow_id(),
            VerificationStep::Cancel {
                reason: CancelReason::Mismatch
            }
        )
    );
    assert_cancelled(&alice_flow, CancelReason::Mismatch);
    assert!(matches!(
        bob_flow.receive(&cancel),
        Err(VerificationError::CancelledByThem(CancelReason::Mismatch))
    ));
    assert_cancelled(&bob_flow, CancelReason::Mismatch);
    assert!(matches!(
        bob_flow.confirm(),
        Err(VerificationError::Cancelled(CancelReason::Mismatch))
    ));
}

#[test]
fn debug_shows_role_flow_and_state_only() {
    let (alice_flow, _) = exchanged();
    let flow_hex: String = alice_flow
        .flow_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        format!("{alice_flow:?}"),
        format!("SasFlow {{ role: Initiator, flow_id: \"{flow_hex}\", state: KeysExchanged, .. }}")
    );
}

fn any_step() -> impl Strategy<Value = VerificationStep> {
    prop_oneof![
        Just(VerificationStep::Start),
        any::<[u8; 32]>().prop_map(|commitment| VerificationStep::Accept { commitment }),
        any::<[u8; 32]>().prop_map(|key| VerificationStep::Key { key }),
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(device_key, master_key)| {
            VerificationStep::Mac {
                device_key,
                master_key,
            }
        }),
        prop::sample::select(vec![
            CancelReason::User,
            CancelReason::Mismatch,
            CancelReason::BadCommitment,
            CancelReason::BadMac,
            CancelReason::UnexpectedStep,
            CancelReason::Timeout,
        ])
        .prop_map(|reason| VerificationStep::Cancel { reason }),
    ]
}

/// A message for the flow under test (most of the time) or garbage.
fn any_message() -> impl Strategy<Value = (u8, Option<[u8; 16]>, VerificationStep)> {
    (
        prop_oneof![4 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![4 => Just(None), 1 => any::<[u8; 16]>().prop_map(Some)],
        any_step(),
    )
}

/// A flow at one of its stages: 0 fresh initiator, 1 fresh responder,
/// 2 keys exchanged, 3 confirmed.
fn flow_at(stage: u8) -> SasFlow {
    match stage {
        0 => SasFlow::start(alice(), bob()).0,
        1 => {
            let (_, start) = SasFlow::start(alice(), bob());
            SasFlow::respond(bob(), alice(), &start).unwrap().0
        }
        2 => exchanged().1,
        _ => {
            let (mut flow, _) = exchanged();
            flow.confirm().unwrap();
            flow
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary messages never panic, never verify anything, and every
    /// error leaves the flow cancelled.
    #[test]
    fn arbitrary_messages_never_panic_or_verify(
        stage in 0u8..4,
        messages in prop::collection::vec(any_message(), 1..8),
        confirm_between in any::<bool>(),
    ) {
        let mut flow = flow_at(stage);
        for (version, flow_id, step) in messages {
            let msg = Verification {
                version,
                flow_id: flow_id.unwrap_or(flow.flow_id()),
                step,
            };
            match flow.receive(&msg) {
                Ok(reply) => {
                    prop_assert!(!matches!(flow.state(), SasState::Cancelled(_)));
                    if let Some(reply) = reply {
                        prop_assert_eq!(reply.flow_id, flow.flow_id());
                        prop_assert_eq!(reply.version, 1);
                    }
                }
                Err(_) => prop_assert!(matches!(flow.state(), SasState::Cancelled(_))),
            }
            if confirm_between {
                let _ = flow.confirm();
            }
            prop_assert!(flow.verified_device().is_none());
            prop_assert_ne!(flow.state(), SasState::Done);
        }
    }
}
