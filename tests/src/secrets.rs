//! Looking for a secret in text the way a leak would show it, not only verbatim: libraries that
//! log buffers print them as hex or as lists of byte values, often of the UTF-16 form that
//! Windows protocols (NTLM, CredSSP) carry.

fn forms(secret: &str) -> Vec<String> {
    let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut out = vec![secret.to_string()];
    for bytes in [secret.as_bytes(), &utf16[..]] {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push(hex.to_uppercase());
        out.push(hex);
        let list: Vec<String> = bytes.iter().map(u8::to_string).collect();
        out.push(list.join(", "));
        out.push(list.join(","));
    }
    out
}

/// Panics naming the form if `text` holds `secret` verbatim, as hex, or as a byte list, in
/// UTF-8 or UTF-16LE.
pub fn assert_secret_absent(text: &str, secret: &str, what: &str) {
    for form in forms(secret) {
        assert!(
            !text.contains(&form),
            "{what} holds the secret (as {form:?})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::assert_secret_absent;

    #[test]
    fn finds_the_forms_a_logged_buffer_takes() {
        let leaks = [
            "pw=Ab1",
            "Data: 0x410062003100 }",
            "return=Ok([4, 65, 0, 98, 0, 49, 0])",
            "buf 416231",
        ];
        for leak in leaks {
            let caught = std::panic::catch_unwind(|| assert_secret_absent(leak, "Ab1", "text"));
            assert!(caught.is_err(), "{leak} was not caught");
        }
        assert_secret_absent("nothing to see, Ab 1, 41 62", "Ab1", "text");
    }
}
