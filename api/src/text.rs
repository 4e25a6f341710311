//! Text from outside (login names, client versions, reasons, statements) made safe to store and
//! to print on an operator's terminal: capped in length, and with every character that a
//! terminal would act on shown as an escape instead.
//!
//! The gateway applies [`inert`] before anything reaches the store or the audit, and `wgctl`
//! applies it again before printing, so neither an old row nor a new bug can clear an operator's
//! screen or forge a line.

use std::borrow::Cow;

/// Longest name (user, login, target, account) kept, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest operator reason (terminate, handoff) kept, in bytes.
pub const MAX_REASON: usize = 512;
/// Longest free text (a reason, a message, a client version) kept, in bytes.
pub const MAX_TEXT: usize = 4096;

/// Characters a terminal acts on, or that change what a line seems to say: C0 and C1 controls,
/// DEL, the Unicode bidirectional controls, line and paragraph separators, and zero-width
/// characters. (A backslash is kept as it is: `\x1b` in a name was typed so, or escaped here;
/// the stored text cannot act on a terminal either way.)
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidi embeddings, overrides, isolates and marks (the Arabic letter mark too).
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}'
            // Line and paragraph separators (a new line to some terminals and viewers).
            | '\u{2028}' | '\u{2029}'
            // Zero-width characters, which make two different names look alike.
            | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
        )
}

/// `s` with unsafe characters escaped (`\x1b`, `\u{202e}`; newline and tab as `\n`, `\t`) and
/// cut to at most `max` bytes on a character boundary, ending with `…` when cut.
pub fn inert(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for c in s.chars() {
        if out.len() > max {
            break; // enough to know it is cut
        }
        if !is_unsafe(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    if out.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    Cow::Owned(out)
}

/// An operator's reason as it is kept and shown: trimmed, [`inert`], cut at [`MAX_REASON`];
/// `None` when empty.
pub fn reason(r: Option<&str>) -> Option<String> {
    let r = r?.trim();
    (!r.is_empty()).then(|| inert(r, MAX_REASON).into_owned())
}

/// Every string in a JSON value made [`inert`] (object keys too), each cut at `max` bytes.
pub fn inert_json(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(o) = inert(s, max) {
                *s = o;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| inert_json(x, max)),
        serde_json::Value::Object(m) => {
            let unsafe_keys: Vec<String> = m
                .keys()
                .filter(|k| matches!(inert(k, MAX_NAME), Cow::Owned(_)))
                .cloned()
                .collect();
            for k in unsafe_keys {
                if let Some(val) = m.remove(&k) {
                    m.insert(inert(&k, MAX_NAME).into_owned(), val);
                }
            }
            m.values_mut().for_each(|x| inert_json(x, max));
        }
        _ => {}
    }
}

/// The display width of `s` in terminal columns, counting every character as one (the escapes
/// [`inert`] makes are ASCII).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `cols` characters, ending with `…` when cut. Never panics, whatever `cols`.
pub fn fit(s: &str, cols: usize) -> Cow<'_, str> {
    if width(s) <= cols {
        return Cow::Borrowed(s);
    }
    if cols == 0 {
        return Cow::Borrowed("");
    }
    let mut out: String = s.chars().take(cols - 1).collect();
    out.push('…');
    Cow::Owned(out)
}

/// `s` cut to `cols` characters from the left, starting with `…` when cut: for paths, where
/// the end (file name, line) says most. Never panics, whatever `cols`.
pub fn fit_tail(s: &str, cols: usize) -> Cow<'_, str> {
    let n = width(s);
    if n <= cols {
        return Cow::Borrowed(s);
    }
    if cols == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::from('…');
    out.extend(s.chars().skip(n - (cols - 1)));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_tail_keeps_the_end() {
        assert_eq!(fit_tail("/a/b/sre.toml:3", 20), "/a/b/sre.toml:3");
        assert_eq!(fit_tail("/long/path/to/sre.toml:3", 12), "…/sre.toml:3");
        assert_eq!(fit_tail("ééééé", 3), "…éé");
        assert_eq!(fit_tail("abc", 0), "");
        assert_eq!(fit_tail("abc", 1), "…");
    }

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(inert("alice", 256), "alice");
        assert_eq!(inert("a\x1b[2Jb", 256), "a\\x1b[2Jb");
        assert_eq!(inert("x\ny\tz\u{7f}", 256), "x\\ny\\tz\\x7f");
        assert_eq!(inert("\u{9b}31m", 256), "\\x9b31m");
        assert_eq!(inert("abc\u{202e}fed", 256), "abc\\u{202e}fed");
        assert_eq!(inert("naïve ✓", 256), "naïve ✓");
    }

    #[test]
    fn caps_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let s = inert(&long, 256);
        assert!(s.len() <= 256, "{}", s.len());
        assert!(s.ends_with('…'));
        let esc = "\x1b".repeat(100);
        let s = inert(&esc, 20);
        assert!(s.len() <= 20, "{s}");
        assert!(s.ends_with('…'));
        assert_eq!(inert("", 0), "");
        assert!(inert("abc", 0).len() <= 3);
    }

    #[test]
    fn json_strings_and_keys() {
        let mut v = serde_json::json!({"login": "a\x1bb", "list": ["\x07"], "k\x1b": 1, "n": 3});
        inert_json(&mut v, 256);
        assert_eq!(v["login"], "a\\x1bb");
        assert_eq!(v["list"][0], "\\x07");
        assert_eq!(v["k\\x1b"], 1);
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn fit_never_panics() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("", usize::MAX), "");
    }
}
