//! Keeping private data out of logs.

use std::fmt;

/// Wraps a value that must not appear in logs: message text, contact names,
/// user ids, addresses. `Debug` and `Display` print `[scrubbed]`; the value
/// is reached only through [`Sensitive::expose`], so leaking it takes a
/// deliberate, greppable call.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Sensitive::new("alice@example.org");
        assert_eq!(format!("{s} {s:?}"), "[scrubbed] [scrubbed]");
        assert_eq!(*s.expose(), "alice@example.org");
    }
}
