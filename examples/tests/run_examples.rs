//! The examples run to completion and say what they should.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::process::Command;

#[test]
fn device_certificates_example_refuses_every_forgery() {
    let out = Command::new(env!("CARGO_BIN_EXE_device-certificates"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("verified  ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("refused   ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("user mismatch") || stdout.contains("is for user"),
        "{stdout}"
    );
    assert!(stdout.contains("bad signature"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("all forgeries refused"),
        "{stdout}"
    );
}

#[test]
fn room_encryption_example_locks_out_the_member_who_left() {
    let out = Command::new(env!("CARGO_BIN_EXE_room-encryption"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bob   reads \"Hello, both of you\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("carol reads \"Hello, both of you\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("bob   reads \"Carol has left\""),
        "{stdout}"
    );
    assert!(stdout.contains("carol cannot read it"), "{stdout}");
    assert!(stdout.contains("RecipientRemoved"), "{stdout}");
}
