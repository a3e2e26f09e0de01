//! What Herald does to JSON that serde does not: nesting depth, and compact form.
//!
//! Server frames carry several messages separated by newlines (and SSE splits events on
//! `\r` and `\n`), so JSON written into a frame verbatim must hold neither byte. In valid
//! JSON both can only be insignificant whitespace (inside strings they must be escaped),
//! so removing whitespace outside strings makes any valid JSON text safe to frame without
//! changing its value.

use std::borrow::Cow;

/// Nesting depth of a JSON text (`1` for `{}`/`[]`, `0` for a scalar), counting brackets
/// outside strings. It assumes the text is valid JSON; check that first.
pub fn nesting_depth(json: &str) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
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
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut in_string = false;
    let mut escaped = false;
    // The common case, already compact, is one scan and no allocation.
    let first_space = json.bytes().position(|b| {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            return false;
        }
        in_string = b == b'"';
        is_space(b)
    });
    let Some(first_space) = first_space else {
        return Cow::Borrowed(json);
    };
    let mut out = String::with_capacity(json.len());
    out.push_str(&json[..first_space]);
    // `in_string` is false here: the scan stopped on whitespace outside a string.
    for c in json[first_space..].chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii() && is_space(c as u8) {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
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
