//! Hard size limits. Every decoder checks its input against one of these
//! *before* parsing, so a peer cannot make a node allocate or work on more
//! than this.

/// Largest padded envelope on the wire (64 KiB). Large enough for a long text
/// message or a room-key batch, small enough that a relay can hold many and
/// that one frame never stalls a yamux stream (256 KiB window). Attachments
/// travel in chunks of at most this size.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Largest plaintext event after decryption. Leaves room for the envelope
/// header and the AEAD/Megolm overhead inside [`MAX_ENVELOPE_BYTES`].
pub const MAX_EVENT_BYTES: usize = 60 * 1024;

/// Largest message body (UTF-8 bytes): 16 KiB is several pages of text; more
/// belongs in an attachment.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 16 * 1024;

/// Largest signed identity record (certificate, device list, profile).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Most devices one user may list. A device list is fetched and checked on
/// every contact change, so it must stay small.
pub const MAX_DEVICES_PER_USER: usize = 32;

/// Most linked e-mail addresses on one profile.
pub const MAX_EMAILS: usize = 8;

/// Most members of one room.
pub const MAX_ROOM_MEMBERS: usize = 256;

/// Most users a room state lists as banned: as many as it may have
/// members, so a room can bar every user it ever had.
pub const MAX_ROOM_BANNED: usize = MAX_ROOM_MEMBERS;

/// Most event ids in one receipt.
pub const MAX_RECEIPT_EVENTS: usize = 256;

/// Longest username in bytes.
pub const MAX_USERNAME_BYTES: usize = 32;

/// Longest display name in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;

/// Longest e-mail address in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Longest opaque ciphertext or key blob inside an envelope, an event or
/// a mailbox request (the largest: a frame sealed for a relay mailbox).
pub const MAX_BLOB_BYTES: usize = crate::mailbox::MAX_SEALED_BYTES;

/// Most relays one device lists for its mailbox.
pub const MAX_DEVICE_RELAYS: usize = 8;

/// Longest relay address (multiaddr text) a relay list may hold.
pub const MAX_RELAY_ADDR_BYTES: usize = 256;
