//! Tests of the at-rest encryption: key files, KDF bounds, value sealing.

use super::*;

#[test]
fn the_wide_cipher_wipes_itself_on_drop() {
    // Compiles only with chacha20poly1305 0.11's `zeroize` feature.
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroized_on_drop::<chacha20poly1305_wide::XChaCha20Poly1305>();
}

#[test]
fn new_key_files_use_at_least_64_mib_and_3_passes() {
    let kdf = KdfParams::default();
    assert!(kdf.m_cost_kib >= 64 * 1024, "{kdf:?}");
    assert!(kdf.t_cost >= 3, "{kdf:?}");
    assert!(!kdf.is_below_default());
}

#[test]
fn a_key_file_under_the_old_default_opens_and_asks_to_be_rewrapped() {
    let old = KdfParams {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    let key = DataKey::generate();
    let pass = Passphrase::new("an old profile's passphrase");
    let file = KeyFile::wrap(&key, &pass, old).unwrap();
    assert!(file.needs_rewrap());
    let opened = file.unwrap_key(&pass).unwrap();
    assert_eq!(opened.0.as_ref(), key.0.as_ref());
    let rewrapped = KeyFile::wrap(&opened, &pass, KdfParams::default()).unwrap();
    assert!(!rewrapped.needs_rewrap());
    assert_eq!(
        rewrapped.unwrap_key(&pass).unwrap().0.as_ref(),
        key.0.as_ref()
    );
}

#[test]
fn the_stack_aad_is_the_aad() {
    for len in [0, 33, 40, 74, 75, 200] {
        let key = vec![9u8; len];
        assert_eq!(
            ValueAad::new(Keyspace::Outbox, &key).as_slice(),
            value_aad(Keyspace::Outbox, &key).as_slice()
        );
    }
}

#[test]
fn long_and_short_values_are_the_same_aead() {
    let cipher = StoreCipher::new(&DataKey::generate());
    for len in [0, 1, 300, WIDE_FROM - 1, WIDE_FROM, WIDE_FROM + 1, 70_000] {
        let value = vec![0x5a; len];
        let sealed = cipher.seal(Keyspace::Timeline, b"k", &value).unwrap();
        // Open with the other implementation than the one that sealed.
        let (version, rest) = sealed.split_first().unwrap();
        assert_eq!(*version, SEALED_VERSION);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let aad = value_aad(Keyspace::Timeline, b"k");
        let mut plain = ct.to_vec();
        cipher
            .value
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad,
                &mut plain,
                Tag::from_slice(tag),
            )
            .unwrap();
        assert_eq!(plain, value);
        assert_eq!(
            cipher
                .open(Keyspace::Timeline, b"k", &sealed)
                .unwrap()
                .as_slice(),
            value.as_slice()
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(cipher.open(Keyspace::Timeline, b"k", &bad).is_err());
    }
}

#[test]
fn sealing_a_value_equals_sealing_its_encoding() {
    let cipher = StoreCipher::new(&DataKey::generate());
    let value = (7u32, "a value".to_owned(), vec![1u8; 300]);
    let sealed = cipher
        .seal_value(Keyspace::Outbox, b"key", &value, 1024)
        .unwrap();
    let opened = cipher.open(Keyspace::Outbox, b"key", &sealed).unwrap();
    assert_eq!(opened.as_slice(), codec::encode(&value).unwrap().as_slice());
    assert!(cipher.open(Keyspace::Outbox, b"other", &sealed).is_err());
    assert!(
        cipher
            .seal_value(Keyspace::Outbox, b"key", &value, 10)
            .is_err()
    );
}

#[test]
fn key_file_round_trip_and_wrong_passphrase() {
    let key = DataKey::generate();
    let kf = KeyFile::wrap(
        &key,
        &Passphrase::new("correct horse"),
        KdfParams::default(),
    )
    .unwrap();
    let back = KeyFile::from_json(&kf.to_json().unwrap()).unwrap();
    let unwrapped = back.unwrap_key(&Passphrase::new("correct horse")).unwrap();
    assert_eq!(*unwrapped.0, *key.0);
    assert!(matches!(
        back.unwrap_key(&Passphrase::new("wrong")),
        Err(Error::WrongPassphrase)
    ));
}

#[test]
fn weakened_or_edited_key_files_are_refused() {
    let key = DataKey::generate();
    let kf = KeyFile::wrap(&key, &Passphrase::new("pw123456"), KdfParams::default()).unwrap();
    let mut weak = kf.clone();
    weak.kdf.m_cost_kib = 8;
    assert!(matches!(
        weak.unwrap_key(&Passphrase::new("pw123456")),
        Err(Error::InvalidKeyFile(_))
    ));
    let mut salted = kf.clone();
    salted.salt[0] ^= 1;
    assert!(matches!(
        salted.unwrap_key(&Passphrase::new("pw123456")),
        Err(Error::WrongPassphrase)
    ));
    let mut short = kf;
    short.wrapped_key.pop();
    assert!(matches!(
        short.unwrap_key(&Passphrase::new("pw123456")),
        Err(Error::InvalidKeyFile(_))
    ));
    assert!(KeyFile::from_json("{").is_err());
}

#[test]
fn sealed_values_are_bound_to_keyspace_and_key() {
    let c = StoreCipher::new(&DataKey::generate());
    let sealed = c.seal(Keyspace::Contacts, b"k1", b"secret").unwrap();
    assert_eq!(
        c.open(Keyspace::Contacts, b"k1", &sealed)
            .unwrap()
            .as_slice(),
        b"secret"
    );
    assert!(c.open(Keyspace::Contacts, b"k2", &sealed).is_err());
    assert!(c.open(Keyspace::Rooms, b"k1", &sealed).is_err());
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(c.open(Keyspace::Contacts, b"k1", &tampered).is_err());
    assert!(c.open(Keyspace::Contacts, b"k1", &sealed[..20]).is_err());
    assert!(c.open(Keyspace::Contacts, b"k1", &[]).is_err());
    // Another data key cannot open it.
    let other = StoreCipher::new(&DataKey::generate());
    assert!(other.open(Keyspace::Contacts, b"k1", &sealed).is_err());
    // Same plaintext twice gives different ciphertexts (random nonces).
    assert_ne!(
        sealed,
        c.seal(Keyspace::Contacts, b"k1", b"secret").unwrap()
    );
}

#[test]
fn name_hashes_are_keyed_and_separated() {
    let key = DataKey::generate();
    let c = StoreCipher::new(&key);
    let p = NameKind::Point;
    let h = c.hash_name(Keyspace::Contacts, p, b"alice");
    assert_eq!(
        h,
        StoreCipher::new(&key).hash_name(Keyspace::Contacts, p, b"alice")
    );
    assert_ne!(h, c.hash_name(Keyspace::Rooms, p, b"alice"));
    assert_ne!(
        h,
        c.hash_name(Keyspace::Contacts, NameKind::Ordered, b"alice")
    );
    assert_ne!(
        h,
        StoreCipher::new(&DataKey::generate()).hash_name(Keyspace::Contacts, p, b"alice")
    );
}
