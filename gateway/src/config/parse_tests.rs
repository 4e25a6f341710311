//! Loading's errors: each names the file, the line and the key.

use super::*;

/// Why `text` (as `gw.toml`) is refused.
fn refusal(text: &str) -> String {
    match parse(text, Path::new("gw.toml")) {
        Ok(_) => panic!("the config was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `e` says each of `parts`.
fn says(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{p:?} not in: {e}");
    }
}

#[test]
fn a_role_with_an_unknown_permission_is_refused_with_its_line() {
    let text = "[[roles]]\nname = \"auditors\"\nmembers = [\"erin\"]\n\
                can = [\"audit.read\", \"audit.delete\"]\n";
    says(
        &refusal(text),
        &[
            "gw.toml line 4",
            "roles.auditors",
            "'audit.delete' is not a permission",
            "audit.read",
        ],
    );
}

#[test]
fn an_approval_webhook_must_be_an_http_url() {
    let text = "[approvals]\nwebhook_url = \"ftp://chat.example/hook\"\n";
    says(
        &refusal(text),
        &[
            "gw.toml line 2",
            "approvals.webhook_url",
            "not an http(s) URL",
        ],
    );
}

#[test]
fn console_cleanup_and_session_bounds_are_checked_with_their_line() {
    let text = "[console]\nidle_timeout = \"2M\"\ncleanup_interval = \"5s\"\n";
    says(
        &refusal(text),
        &["gw.toml line 3", "console.cleanup_interval", "at least 10s"],
    );
    let text = "[console]\nmax_sessions = 0\n";
    says(
        &refusal(text),
        &["gw.toml line 2", "console.max_sessions", "1 to 1000"],
    );
    let text = "[console]\nlifespan = \"1x\"\n";
    says(&refusal(text), &["gw.toml line 2", "M (30 days)"]);
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let text = "[api]\nlisten = \"0.0.0.0:8080\"\nplain_http = true\n";
    says(
        &refusal(text),
        &["gw.toml line 3", "api.plain_http", "in clear"],
    );
}

#[test]
fn an_identity_origin_on_an_ip_address_is_refused() {
    let text = "[identity]\norigin = \"http://10.0.0.5:8080\"\n";
    says(
        &refusal(text),
        &["gw.toml line 1", "identity", "IP address"],
    );
}

#[test]
fn errors_name_file_line_and_key() {
    let text = "[[users]]\nname = \"alice\"\npublic_keys = [\"ssh-ed25519 notbase64\"]\n";
    says(
        &refusal(text),
        &["gw.toml line 3", "users.alice.public_keys[0]"],
    );
}

/// Lines come from the document's spans, not from searching the text: a name defined twice
/// is shown at its second definition, and a bad value at its own line even when the same
/// text appears earlier in the file.
#[test]
fn errors_point_at_the_offending_value_not_the_first_match() {
    let hash =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$9Jb2ePnBiCIJUWOVVtP0kHbpv4x9sUE8C5bvpY4Qd1g";
    let twice = format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"
    );
    let e = refusal(&twice);
    assert!(
        e.contains("gw.toml line 6: users.name 'alice' is defined twice"),
        "{e}"
    );

    // "web-01" is on line 2 as a comment; the bad address is on line 5.
    let text = "[[targets]]\n# web-01 is the first web server\nname = \"web-01\"\n\
                accounts = [{ name = \"root\", secret = \"web-01/root\" }]\n\
                address = \"web-01\"\n";
    let e = refusal(text);
    assert!(
        e.contains("gw.toml line 5: targets.web-01.address 'web-01' must be host:port"),
        "{e}"
    );
}

#[test]
fn unknown_key_is_rejected_with_line() {
    let text = "[ssh]\nlisten = \"127.0.0.1:2222\"\nlisen = 1\n";
    says(&refusal(text), &["gw.toml line 3", "lisen"]);
}

#[test]
fn groups_resolve_members() {
    let text = r#"
[[users]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$9Jb2ePnBiCIJUWOVVtP0kHbpv4x9sUE8C5bvpY4Qd1g"
[[groups]]
name = "sre"
members = ["alice"]
[[targets]]
name = "web-01"
address = "127.0.0.1:22"
accounts = [{ name = "root", secret = "web-01/root" }]
"#;
    let l = parse(text, Path::new("gw.toml")).expect("valid");
    assert_eq!(l.users["alice"].groups, vec!["sre".to_string()]);
    assert_eq!(l.targets["web-01"].accounts[0].username(), "root");
}

#[test]
fn a_target_cannot_be_of_the_network_protocol() {
    let text = "[[targets]]\nname = \"db\"\nprotocol = \"network\"\naddress = \"10.0.0.1:5432\"\n";
    says(
        &refusal(text),
        &[
            "gw.toml line 3",
            "targets.db",
            "'network' is not a target's protocol",
            "[[resources]]",
        ],
    );
}
