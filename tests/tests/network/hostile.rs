//! The access endpoints facing a hostile caller or a misbehaving backend: forged or flooded
//! `X-Forwarded-For`, oversized and escape-laden input, no token, a script that hangs or floods
//! its stderr. Each is refused or contained, says so plainly, and leaves no rule behind.

use std::time::Duration;

use wardengate_tests::{run, tcp::wgctl_as, TestEnv};

use super::*;

#[test]
fn hostile_callers_and_misbehaving_backends_are_contained() {
    let env = TestEnv::new();
    let ledger = wardengate_tests::ledger::Ledger::new(env.path("allowed.txt"));
    let more = format!(
        "[access]\ncommand_timeout = \"1s\"\n\n{}\
         [[resources]]\nname = \"slow\"\ntags = {{ env = \"slow\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"exec sleep 31.5\", \"apply\"]\nrevoke = [\"/bin/true\"]\n\n\
         [[resources]]\nname = \"noisy\"\ntags = {{ env = \"noisy\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"printf '\\\\033[31mred' >&2; head -c 1000000 /dev/zero | tr '\\\\0' x >&2; exit 1\", \"apply\"]\n\
         revoke = [\"/bin/true\"]\n\n",
        ledger.resource("bastion", ("env", "test"), "")
    );
    let policies = format!(
        "{NET_POLICY}\n[[policies]]\nname = \"bob-odd\"\nusers = [\"bob\"]\nprotocols = [\"network\"]\n\
         resource_tags = [\"env=slow\"]\npriority = 5\n\n\
         [[policies]]\nname = \"bob-noisy\"\nusers = [\"bob\"]\nprotocols = [\"network\"]\n\
         resources = [\"noisy\"]\npriority = 5\n"
    );
    let policies = policies.replace("groups = [\"sre\"]", "users = [\"alice\"]");
    let gw = gateway(&env, &more, &policies);
    let post = |headers: &[String], body: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.args([
            "--data-binary",
            body,
            &format!("{}/api/v1/access-sessions", gw.api),
        ]);
        let out = run(&mut cmd, T);
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = t.rsplit_once('\n').expect("status");
        (code.to_string(), body.to_string())
    };
    let alice = format!("Authorization: Bearer {ALICE}");

    // No token, or a wrong one: 401, nothing applied.
    let (code, _) = post(&[], "{}");
    assert_eq!(code, "401");
    let (code, _) = post(&["Authorization: Bearer nope".into()], "{}");
    assert_eq!(code, "401");
    // A flood of forwarded addresses from the trusted proxy: refused, not truncated.
    let many = vec!["203.0.113.1"; 40].join(", ");
    let (code, body) = post(&[alice.clone(), format!("X-Forwarded-For: {many}")], "{}");
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("more than 32 addresses"), "{body}");
    let (code, body) = post(
        &[alice.clone(), "X-Forwarded-For: 10.0.0.1.evil".into()],
        "{}",
    );
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("'10.0.0.1.evil' is not an address"), "{body}");
    // An oversized, escape-laden duration: refused with the value cut and made inert.
    let long = format!("{{\"duration\":\"\\u001b[31m{}\"}}", "9".repeat(100_000));
    let (code, body) = post(
        &[alice.clone(), "X-Forwarded-For: 198.51.100.3".into()],
        &long,
    );
    assert_eq!(code, "400", "{}", &body[..body.len().min(300)]);
    assert!(
        body.len() < 600,
        "the refusal echoes the input: {} bytes",
        body.len()
    );
    assert!(!body.contains('\u{1b}'), "{body}");
    assert!(
        body.contains("\\x1b[31m999") && body.contains("is not a duration"),
        "{body}"
    );
    // A body over the API's limit.
    let huge = format!("{{\"duration\":\"{}\"}}", "x".repeat(3 << 20));
    let file = env.path("huge.json");
    std::fs::write(&file, huge).expect("huge");
    let (code, _) = post(
        std::slice::from_ref(&alice),
        &format!("@{}", file.display()),
    );
    assert_eq!(code, "413");
    // An id with escapes: the same 404 as any unknown id, the text inert.
    let (code, body) = gw.request("GET", "/api/v1/access-sessions/%1b%5b31mx", ALICE, "");
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains('\u{1b}'), "{body}");
    assert_eq!(ledger.read(), "", "a refused start applied a rule");
    assert!(
        gw.audit("access.requested").is_empty(),
        "a refused start got as far as a session"
    );

    // Behind the trusted proxy, the token guard counts the forwarded address, not the proxy: a
    // guesser at one address is held back, a person at another is not, and thirty people at
    // once through the proxy all get in.
    for _ in 0..8 {
        let (code, _) = post(
            &[
                "Authorization: Bearer guess".into(),
                "X-Forwarded-For: 198.51.100.66".into(),
            ],
            "{}",
        );
        assert_eq!(code, "401");
    }
    let (code, body) = post(
        &[alice.clone(), "X-Forwarded-For: 198.51.100.66".into()],
        "{}",
    );
    assert_eq!(code, "401", "the guesser's address was let through: {body}");
    let (code, body) = post(
        &[alice.clone(), "X-Forwarded-For: 198.51.100.67".into()],
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, "200", "{body}");
    let codes: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..30)
            .map(|i| {
                let (post, alice) = (&post, &alice);
                s.spawn(move || {
                    post(
                        &[
                            alice.clone(),
                            format!("X-Forwarded-For: 203.0.113.{}", i + 1),
                        ],
                        "{\"duration\":\"1h\"}",
                    )
                    .0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");

    // bob's resources: one hangs (killed at command_timeout), one floods its stderr (capped,
    // escapes made inert). Neither rule is applied; the session FAILED.
    let started = std::time::Instant::now();
    let out = run(
        wgctl_as(&gw, BOB).args(["access", "start", "--from", "127.0.0.2", "-o", "json"]),
        T,
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a hung script held the start"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["state"], "FAILED", "{s:#}");
    let err = |name: &str| {
        s["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["resource"] == name)
            .and_then(|r| r["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        err("slow").contains("did not finish within 1s (access.command_timeout)"),
        "{}",
        err("slow")
    );
    let noisy = err("noisy");
    assert!(noisy.contains("exited with 1"), "{noisy}");
    assert!(
        noisy.len() < 2048,
        "stderr not capped: {} bytes",
        noisy.len()
    );
    assert!(
        noisy.contains("\\x1b[31mred") && !noisy.contains('\u{1b}'),
        "{}",
        &noisy[..noisy.len().min(200)]
    );
    assert!(noisy.contains("xxxx"), "the flood is kept up to the cap");
    let left = run(
        std::process::Command::new("pgrep").args(["-f", "sleep 31.5"]),
        T,
    );
    assert!(!left.status.success(), "the hung script is still running");
}
