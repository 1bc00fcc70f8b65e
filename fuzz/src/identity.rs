//! The `identity` target: signed records and certificates as they arrive
//! from peers (in invites, to-device events and gossip), decoded and
//! verified by [`safemeet_crypto::certificate`].

use safemeet_crypto::certificate::{
    self, verify_device_certificate, verify_device_list, verify_one_time_key, verify_profile,
    verify_relay_list,
};
use safemeet_proto::identity::{
    DeviceCertificate, DeviceList, OneTimeKey, Profile, RelayList, Signed,
};
use safemeet_proto::invite::Invite;

/// Signed records of each kind: [`Signed::from_bytes`], the body, and the
/// verification a receiver runs (against the user the record names, so
/// the signature check runs on every record that decodes; one-time keys
/// and relay lists against a real device certificate).
pub fn identity(data: &[u8]) {
    if let Ok(signed) = Signed::<DeviceCertificate>::from_bytes(data) {
        assert_eq!(signed.to_bytes().expect("it encodes"), data);
        if let Ok(cert) = signed.decode_body() {
            let _ = verify_device_certificate(&signed, &cert.user_id);
            let _ = certificate::active_entry(&signed);
        }
    }
    if let Ok(signed) = Signed::<DeviceList>::from_bytes(data)
        && let Ok(list) = signed.decode_body()
    {
        let _ = verify_device_list(&signed, &list.user_id, None);
    }
    if let Ok(signed) = Signed::<Profile>::from_bytes(data)
        && let Ok(profile) = signed.decode_body()
    {
        let _ = verify_profile(&signed, &profile.user_id, None);
    }
    let device = crate::seeds::device();
    if let Ok(signed) = Signed::<OneTimeKey>::from_bytes(data) {
        let _ = verify_one_time_key(&signed, device);
    }
    if let Ok(signed) = Signed::<RelayList>::from_bytes(data) {
        let _ = verify_relay_list(&signed, device);
    }
}

/// Verifies an invite's records as accepting it does: the device list and
/// certificates of the user it names, the profile, the fallback key and
/// relay list against the certificate of the device they name.
pub(crate) fn check_invite(invite: &Invite) {
    let Ok(body) = invite.device_list.decode_body() else {
        return;
    };
    let user = body.user_id;
    let _ = verify_device_list(&invite.device_list, &user, None);
    let _ = verify_profile(&invite.profile, &user, None);
    let Ok(key) = invite.fallback_key.decode_body() else {
        return;
    };
    for signed in &invite.certificates {
        let Ok(cert) = verify_device_certificate(signed, &user) else {
            continue;
        };
        if cert.device_id == key.device_id {
            let _ = verify_one_time_key(&invite.fallback_key, &cert);
            if let Some(relays) = &invite.relays {
                let _ = verify_relay_list(relays, &cert);
            }
        }
    }
}
