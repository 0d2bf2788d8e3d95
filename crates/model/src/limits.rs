//! Bounds on what one record may be. Checked by the one write path before anything is
//! written, on a site's own writes as on the central server's re-check of a pushed change, so
//! that no node stores what another node cannot read back.

use crate::rules::Refusal;
use std::borrow::Cow;

/// The longest id a record may have, in bytes. mSupply's ids are 32 hex digits; composite ids
/// (`store@site`) are a few times that.
pub const MAX_ID_BYTES: usize = 256;
/// The largest document one record may have, in bytes of JSON.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The deepest nesting of objects and arrays a document may have. A record is a flat row with a
/// few nested lists; the JSON readers of every node stop at 128.
pub const MAX_DEPTH: usize = 32;

/// Checks a record id: not empty, not too long, no control characters (a NUL or a newline in
/// an id breaks logs, file names and the tools an operator uses to look at them).
pub fn check_id(id: &str) -> Result<(), Refusal> {
    let bad = |reason: &str| Err(Refusal::BadId { reason: reason.to_owned() });
    if id.is_empty() {
        return bad("an id may not be empty");
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Refusal::BadId {
            reason: format!("an id may be at most {MAX_ID_BYTES} bytes (this one has {})", id.len()),
        });
    }
    if id.chars().any(char::is_control) {
        return bad("an id may not contain control characters (NUL, tab, newline, …)");
    }
    Ok(())
}

/// Checks a document's size and nesting depth, reading the text once without building it.
pub fn check_document(json: &str) -> Result<(), Refusal> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(Refusal::TooLarge { bytes: json.len(), max: MAX_RECORD_BYTES });
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Refusal::TooDeep { max: MAX_DEPTH });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Text from the wire as it may be shown and stored beside a refusal: as it is when it is a
/// valid id, else escaped and cut to [`MAX_ID_BYTES`] (a NUL byte or ten megabytes of id must
/// not reach a log line, a database column or an error message).
pub fn shown(text: &str) -> Cow<'_, str> {
    if check_id(text).is_ok() {
        return Cow::Borrowed(text);
    }
    let escaped: String = text.chars().take(MAX_ID_BYTES).flat_map(char::escape_debug).take(MAX_ID_BYTES).collect();
    if text.len() > MAX_ID_BYTES {
        Cow::Owned(format!("{escaped}… ({} bytes)", text.len()))
    } else {
        Cow::Owned(escaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_printable_bounded_and_present() {
        assert!(check_id("item-0001").is_ok());
        assert!(check_id("north-pharmacy@north").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn depth_counts_only_structure_outside_strings() {
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_document(&at_limit).is_ok());
        let over = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check_document(&over), Err(Refusal::TooDeep { max: MAX_DEPTH }));
        let brackets_in_strings = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(check_document(&brackets_in_strings).is_ok());
    }

    #[test]
    fn shown_text_is_printable_and_bounded() {
        assert_eq!(shown("item-1"), "item-1");
        assert_eq!(shown("a\0b"), "a\\0b");
        assert_eq!(shown(""), "");
        let ten_megabytes = "x".repeat(10_000_000);
        let long = shown(&ten_megabytes);
        assert!(long.len() < 2 * MAX_ID_BYTES && long.ends_with("(10000000 bytes)"), "{long}");
    }

    #[test]
    fn documents_have_a_maximum_size() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        assert!(matches!(check_document(&big), Err(Refusal::TooLarge { .. })));
    }
}
