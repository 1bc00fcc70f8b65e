//! Paging: list answers cut to fit in one line.
//!
//! A `messages` or `events` answer is a JSON array whose entries can each
//! take up to about 100 KB (16 KiB of text, every byte a control character
//! escaped as `\u00XX`). An answer holds as many entries as fit in
//! [`PAGE_BYTES`], always at least one; the client asks again after the last
//! entry's cursor for the rest, until an answer comes back empty.
//! Entries are measured as the JSON they become, so the bound holds
//! whatever the text is made of.

use serde::Serialize;

use crate::{Error, MAX_LINE_BYTES};

/// Most bytes the result array of one answer takes: a line, less room for
/// the JSON-RPC envelope around it (`{"jsonrpc":"2.0","id":…,"result":…}`,
/// whose `id` is at most [`MAX_ID_BYTES`](crate::MAX_ID_BYTES)).
pub const PAGE_BYTES: usize = MAX_LINE_BYTES - 1024;

/// The first entries of `items` whose JSON array fits in `budget` bytes,
/// and whether some were left out. At least one entry is kept; if even the
/// first does not fit, that is [`Error::TooLarge`] (a page with nothing in
/// it would make a client ask forever).
pub fn page<T: Serialize>(mut items: Vec<T>, budget: usize) -> Result<(Vec<T>, bool), Error> {
    // `[` and `]`, then each entry and a comma before all but the first.
    let mut used = 2;
    let mut fit = 0;
    for (i, item) in items.iter().enumerate() {
        let bytes = json_len(item);
        let need = bytes + usize::from(i > 0);
        if used + need > budget {
            if i == 0 {
                return Err(Error::TooLarge {
                    bytes,
                    max: budget.saturating_sub(2),
                });
            }
            break;
        }
        used += need;
        fit += 1;
    }
    let more = fit < items.len();
    items.truncate(fit);
    Ok((items, more))
}

/// The length of `value` as compact JSON, without building the text.
fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising our own response types to a counter cannot fail; if it
    // ever did, counting the entry as too large is the safe side.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX / 2,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_page_holds_what_fits_and_says_whether_more_is_left() {
        // Each "xxxx" is 6 bytes of JSON; the array of n of them 7n+1.
        let items = || vec!["xxxx"; 5];
        assert_eq!(page(items(), 1000).unwrap(), (items(), false));
        let exact = 7 * 5 + 1;
        assert_eq!(page(items(), exact).unwrap(), (items(), false));
        assert_eq!(page(items(), exact - 1).unwrap(), (vec!["xxxx"; 4], true));
        assert_eq!(page(items(), 8).unwrap(), (vec!["xxxx"], true));
        assert_eq!(page(Vec::<&str>::new(), 2).unwrap(), (vec![], false));
        for budget in 8..60 {
            let (kept, _) = page(items(), budget).unwrap();
            assert!(serde_json::to_string(&kept).unwrap().len() <= budget);
        }
    }

    #[test]
    fn a_first_entry_that_cannot_fit_is_an_error_not_an_empty_page() {
        let e = page(vec!["xxxx"], 7).unwrap_err();
        assert!(matches!(e, Error::TooLarge { bytes: 6, max: 5 }), "{e}");
    }

    #[test]
    fn control_characters_are_counted_as_sent() {
        // 16 KiB of control characters: six bytes each once escaped.
        let text = "\u{1}".repeat(16 * 1024);
        let items = vec![text.clone(), text.clone(), text];
        let (kept, more) = page(items, PAGE_BYTES).unwrap();
        assert_eq!((kept.len(), more), (2, true));
        assert!(serde_json::to_string(&kept).unwrap().len() <= PAGE_BYTES);
    }
}
