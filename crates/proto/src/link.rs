//! Device links: what a device that holds the master key shows so that a
//! new device of the same user can join it.
//!
//! A link names the showing device's peer id and addresses, carries a
//! 256-bit one-time secret (the pre-shared key of the `Noise_XXpsk3`
//! handshake the two devices then run over a libp2p stream) and says when
//! it expires. Its text form is `safemeet-link:` followed by lowercase
//! base32 of the codec encoding. The secret is as strong as any key, so a
//! link that is seen can be used, but one that is guessed cannot: keep it
//! out of sight, and it is good for one use within ten minutes.

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Timestamp, codec};

/// Why a link's text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// It is not a link.
    #[error("it is not a device link (it does not start with `safemeet-link:`)")]
    NoPrefix,
    /// It does not decode.
    #[error("the link is damaged or from another version")]
    Damaged,
    /// A version this build does not know.
    #[error("unsupported link version")]
    UnsupportedVersion,
    /// More or longer addresses than allowed, or none.
    #[error("the link's addresses are missing or too many")]
    BadAddresses,
    /// It could not be encoded.
    #[error("the link is too large to encode")]
    Encode,
}

/// The text prefix of a link.
pub const LINK_PREFIX: &str = "safemeet-link:";
/// The link format version this build writes and reads.
pub const LINK_VERSION: u8 = 1;
/// Largest link accepted, encoded.
const MAX_LINK_BYTES: usize = 4096;
/// Most addresses a link carries.
pub const MAX_LINK_ADDRS: usize = 16;
/// How long a link is good for.
pub const LINK_LIFETIME_MS: u64 = 10 * 60 * 1000;

/// A device link.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct LinkOffer {
    /// Format version.
    pub version: u8,
    /// The showing device's libp2p peer id (bytes).
    pub peer_id: Vec<u8>,
    /// Where it listens (multiaddr text).
    pub addrs: Vec<String>,
    /// The one-time secret.
    pub secret: [u8; 32],
    /// When the link stops working (the showing device's clock).
    #[zeroize(skip)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for LinkOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOffer")
            .field("addrs", &self.addrs)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl LinkOffer {
    /// The text form.
    pub fn to_text(&self) -> Result<String, LinkError> {
        let bytes = codec::encode_limited(self, MAX_LINK_BYTES).map_err(|_| LinkError::Encode)?;
        Ok(format!(
            "{LINK_PREFIX}{}",
            BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
        ))
    }

    /// Parses the text form (surrounding whitespace is ignored).
    pub fn from_text(text: &str) -> Result<Self, LinkError> {
        let body = text
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or(LinkError::NoPrefix)?;
        if body.len() > MAX_LINK_BYTES * 2 {
            return Err(LinkError::Damaged);
        }
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| LinkError::Damaged)?;
        let offer: LinkOffer =
            codec::decode(&bytes, MAX_LINK_BYTES).map_err(|_| LinkError::Damaged)?;
        if offer.version != LINK_VERSION {
            return Err(LinkError::UnsupportedVersion);
        }
        if offer.addrs.is_empty()
            || offer.addrs.len() > MAX_LINK_ADDRS
            || offer.addrs.iter().any(|a| a.len() > 256)
        {
            return Err(LinkError::BadAddresses);
        }
        Ok(offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> LinkOffer {
        LinkOffer {
            version: LINK_VERSION,
            peer_id: vec![1, 2, 3],
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            secret: [7; 32],
            expires_at: Timestamp::from_millis(1_700_000_000_000).unwrap_or(Timestamp::EPOCH),
        }
    }

    #[test]
    fn text_round_trips_and_debug_hides_the_secret() {
        let text = offer().to_text().unwrap();
        assert!(text.starts_with(LINK_PREFIX));
        assert_eq!(
            LinkOffer::from_text(&format!("  {text}\n")).unwrap(),
            offer()
        );
        assert!(!format!("{:?}", offer()).contains("secret"));
    }

    #[test]
    fn damaged_foreign_and_oversized_links_are_refused() {
        let text = offer().to_text().unwrap();
        assert_eq!(
            LinkOffer::from_text("safemeet:abc").unwrap_err(),
            LinkError::NoPrefix
        );
        let cut = &text[..text.len() - 5];
        assert_eq!(LinkOffer::from_text(cut).unwrap_err(), LinkError::Damaged);
        let mut many = offer();
        many.addrs = vec!["/ip4/127.0.0.1/tcp/1".into(); MAX_LINK_ADDRS + 1];
        let text = many.to_text().unwrap();
        assert_eq!(
            LinkOffer::from_text(&text).unwrap_err(),
            LinkError::BadAddresses
        );
        let huge = format!("{LINK_PREFIX}{}", "a".repeat(MAX_LINK_BYTES * 3));
        assert_eq!(LinkOffer::from_text(&huge).unwrap_err(), LinkError::Damaged);
    }
}
