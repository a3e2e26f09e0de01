//! What Herald does to JSON that serde does not: nesting depth, and compact form.
//!
//! Server frames carry several messages separated by newlines (and SSE splits events on
//! `\r` and `\n`), so JSON written into a frame verbatim must hold neither byte. In valid
//! JSON both can only be insignificant whitespace (inside strings they must be escaped),
//! so removing whitespace outside strings makes any valid JSON text safe to frame without
//! changing its value.

use std::borrow::Cow;

/// Walks a JSON text byte by byte and tells which bytes stand outside strings. Bytes of a
/// multi-byte UTF-8 character are never quotes, backslashes or whitespace, so bytes will do.
#[derive(Default)]
struct Scanner {
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    /// Whether `b` is outside a string (a string's quotes count as inside).
    fn outside(&mut self, b: u8) -> bool {
        if self.in_string {
            match b {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return false;
        }
        self.in_string = b == b'"';
        !self.in_string
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Nesting depth of a JSON text (`1` for `{}`/`[]`, `0` for a scalar), counting brackets
/// outside strings. It assumes the text is valid JSON; check that first.
pub fn nesting_depth(json: &str) -> usize {
    let mut scanner = Scanner::default();
    let mut depth = 0usize;
    let mut max = 0usize;
    for b in json.bytes().filter(|b| scanner.outside(*b)) {
        match b {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The JSON text without whitespace outside strings; borrowed when there was none. It
/// assumes the text is valid JSON (check that first: removing the space from `1 2` would
/// make invalid JSON valid).
pub fn compact(json: &str) -> Cow<'_, str> {
    let mut scanner = Scanner::default();
    let mut bytes = json.bytes();
    // The common case, already compact, is one scan and no allocation.
    let Some(first_space) = bytes.position(|b| scanner.outside(b) && is_space(b)) else {
        return Cow::Borrowed(json);
    };
    let mut out = Vec::with_capacity(json.len());
    out.extend_from_slice(&json.as_bytes()[..first_space]);
    out.extend(bytes.filter(|b| !(scanner.outside(*b) && is_space(*b))));
    // Only ASCII bytes were removed, so the rest is still UTF-8.
    match String::from_utf8(out) {
        Ok(compacted) => Cow::Owned(compacted),
        Err(_) => Cow::Borrowed(json),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{compact, nesting_depth};

    #[test]
    fn compacts_whitespace_outside_strings_only() {
        assert!(matches!(compact(r#"{"a":[1,"b c"]}"#), Cow::Borrowed(_)));
        assert_eq!(compact("{\"a\":\n1,\r\n\"b\":\t2}"), r#"{"a":1,"b":2}"#);
        assert_eq!(
            compact("[ \"x \\\" y\" , \"\\\\\" ,\n{ } ]"),
            r#"["x \" y","\\",{}]"#
        );
        assert_eq!(compact(" \"é ü\" "), "\"é ü\"");
        assert_eq!(compact("\"a\\n\" "), "\"a\\n\"");
    }

    #[test]
    fn counts_depth_outside_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth("{}"), 1);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"{"a":"[[[[\"{{"}"#), 1);
        assert_eq!(nesting_depth(r#"["\\",[["x"]]]"#), 3);
    }
}
