//! Checks on client-supplied JSON that serde does not make: nesting depth.

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

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn counts_depth_outside_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth("{}"), 1);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"{"a":"[[[[\"{{"}"#), 1);
        assert_eq!(nesting_depth(r#"["\\",[["x"]]]"#), 3);
    }
}
