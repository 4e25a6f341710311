//! Password guessing and user enumeration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wardengate_tests::hostile::{self, Attempt, ATTACKER};
use wardengate_tests::*;

use super::{askpass, ssh_with_password, T};

/// 16 clients guessing alice's password as fast as they can from one address: the gateway's
/// memory stays flat (it went from 21 MB to 2.7 GB before), the attacker is throttled and
/// audited once per burst, and the real alice, from her own address, logs in meanwhile.
#[test]
fn password_guessing_keeps_memory_flat_and_the_real_user_in() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = env.gateway().target("web-01.test", &sshd).start();
    let pid = gw.pid();
    // One check first, so the dummy hash and the check threads exist before the baseline.
    let rt = hostile::runtime();
    rt.block_on(hostile::ssh_password(
        "127.0.0.1",
        gw.ssh_port,
        "nobody:web-01.test",
        "x",
    ));
    let (before, _) = hostile::rss_mib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..16)
        .map(|i| {
            let (stop, tries, accepted) = (stop.clone(), tries.clone(), accepted.clone());
            let port = gw.ssh_port;
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let guess = format!("guess-{i}-{n}");
                    let a =
                        hostile::ssh_password(ATTACKER, port, "alice:web-01.test", &guess).await;
                    tries.fetch_add(1, Ordering::Relaxed);
                    if a == Attempt::Accepted {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // The real alice, from 127.0.0.1, with her password, during the attack.
    let right = askpass(&env, "right.sh", ALICE_PASSWORD);
    let out = run(
        ssh_with_password(&gw, &env, "alice:web-01.test", &right).arg("echo in"),
        T,
    );
    assert_eq!(text(&out.stdout).trim(), "in", "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = rt.block_on(a);
    }
    let (after, peak) = hostile::rss_mib(pid);
    let tries = tries.load(Ordering::Relaxed);
    eprintln!("{tries} guesses; RSS {before} MiB before, {after} after, peak {peak}");
    assert!(tries > 100, "the attack ran ({tries} guesses)");
    assert_eq!(accepted.load(Ordering::Relaxed), 0);
    // Each argon2 check takes 19 MiB; unbounded, 16 at once took gigabytes. One check thread per
    // core (2 here), each reusing its memory: one more check's worth over the baseline (which
    // already holds one), and a little for the connections.
    assert!(
        peak <= before + 48,
        "memory grew under attack: {before} MiB before, peak {peak} MiB"
    );
    // Throttled: most guesses were refused without a check, and the audit has one event for the
    // burst, not one per guess.
    let from_attacker = |kind: &str| -> Vec<serde_json::Value> {
        gw.audit(kind)
            .into_iter()
            .filter(|e| e.to_string().contains(ATTACKER))
            .collect()
    };
    let failed = from_attacker("auth.failed");
    assert!(
        failed.len() < 30,
        "{} checked failures audited out of {tries} guesses",
        failed.len()
    );
    let throttled: Vec<_> = from_attacker("auth.throttled")
        .into_iter()
        .filter(|e| e["detail"]["scope"] == "source")
        .collect();
    assert_eq!(throttled.len(), 1, "one event per burst: {throttled:?}");
    assert!(
        gw.audit("auth.throttled")
            .iter()
            .all(|e| !e.to_string().contains("127.0.0.1\"")),
        "the real user's address was never throttled"
    );
}

/// Unknown user, wrong password, a user without a password, a malformed login and an overlong
/// one: the same prompt, the same text, at least `auth_rejection_time` per attempt; the reason
/// only in the audit.
#[test]
fn refusals_look_the_same_whoever_asks() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let dan = wardengate_gateway::keys::generate_ed25519("dan").expect("key");
    let dan_pub = wardengate_gateway::keys::public_openssh(&dan).expect("pub");
    let gw = env
        .gateway()
        .target("web-01.test", &sshd)
        .ssh_rejection_time("300ms")
        // Fifteen failures from one address here; the throttle has a test of its own.
        .security_lines("failures_before_backoff = 1000\nuser_failures_before_backoff = 1000")
        .extra(&format!(
            "[[users]]\nname = \"dan\"\ngroups = [\"sre\"]\npublic_keys = [\"{dan_pub}\"]\n\n"
        ))
        .start();
    let long = format!("{}:web-01.test", "x".repeat(300));
    let cases = [
        ("mallory:web-01.test", "unknown_user"),
        ("alice:web-01.test", "bad_password"),
        ("dan:web-01.test", "no_password"),
        ("alice", "bad_login"),
        (long.as_str(), "bad_login"),
    ];
    let mut texts = Vec::new();
    for (i, (login, reason)) in cases.iter().enumerate() {
        let pass = askpass(&env, &format!("wrong{i}.sh"), "not the password");
        let started = Instant::now();
        let out = run(ssh_with_password(&gw, &env, login, &pass).arg("true"), T);
        let took = started.elapsed();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{login}: {err}");
        assert!(
            err.contains(
                wardengate_protocols::ssh::ACCESS_DENIED
                    .split('.')
                    .next()
                    .unwrap_or_default()
            ),
            "{login}: {err}"
        );
        for detail in [
            "unknown",
            "no public key",
            "no password",
            "wrong password",
            "does not name",
        ] {
            assert!(!err.contains(detail), "{login} revealed '{detail}': {err}");
        }
        // Asked for a password three times, like everyone, each refusal delayed.
        let prompts =
            std::fs::read_to_string(env.path(&format!("wrong{i}.sh.prompts"))).unwrap_or_default();
        assert_eq!(prompts.lines().count(), 3, "{login}: {prompts}");
        assert!(
            took >= Duration::from_millis(900),
            "{login}: three refusals in {took:?}"
        );
        assert!(
            gw.audit("auth.failed")
                .iter()
                .any(|e| e["detail"]["reason"] == *reason),
            "{login}: no auth.failed/{reason}"
        );
        // The text, less the login it names.
        texts.push(
            err.lines()
                .filter(|l| l.contains("wardengate"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:#?}");
}

/// PostgreSQL and the API are throttled the same way: after five wrong passwords (or tokens)
/// from one address, even the right one is refused from there for a while, in the same words,
/// while the same user or token from another address works.
#[test]
fn postgres_and_api_guessing_is_throttled_too() {
    use wardengate_tests::pg::{pg_targets, Raw};
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let gw = pg_targets(env.gateway(), &pg).start();
    let port = gw.pg_port.expect("postgres");
    // SCRAM from the attacker's address, with `password`: the final message the gateway sends.
    let scram = |password: &str| -> (u8, String) {
        use bytes::BytesMut;
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::frontend;
        let mut r = Raw {
            s: hostile::std_tcp_from(ATTACKER, port).expect("connect"),
        };
        r.s.set_read_timeout(Some(T)).expect("timeout");
        r.startup("alice#billing.test");
        let _ = r.recv().expect("SASL request");
        let mut s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut b = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut b).expect("sasl");
        r.send(&b);
        let (_, body) = r.recv().expect("SASLContinue");
        let _ = s.update(&body[4..]);
        b.clear();
        frontend::sasl_response(s.message(), &mut b).expect("sasl");
        r.send(&b);
        let (tag, body) = r.recv().expect("an answer");
        (tag, wardengate_tests::pg::field(&body, 'C'))
    };
    for _ in 0..5 {
        assert_eq!(scram("guess"), (b'E', "28P01".to_string()));
    }
    let _ = scram("guess"); // the sixth starts the wait
    assert_eq!(
        scram(ALICE_PASSWORD),
        (b'E', "28P01".to_string()),
        "the right password from a throttled address is refused like a wrong one"
    );
    let out = run(
        gw.psql("alice#billing.test", "").args(["-c", "select 1"]),
        T,
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "1",
        "alice from her own address: {}",
        text(&out.stderr)
    );

    // The API: wrong tokens from the attacker's address, then the right one from there.
    let rt = hostile::runtime();
    let api_port = gw.api_port();
    let status = |token: &str| -> u16 {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = hostile::tcp_from(ATTACKER, api_port).await.expect("connect");
            let req = format!(
                "GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("request");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
        })
    };
    assert_eq!(status(&gw.token), 200);
    for i in 0..6 {
        assert_eq!(status(&format!("guess-{i}")), 401);
    }
    assert_eq!(
        status(&gw.token),
        401,
        "throttled: even the right token waits"
    );
    assert_eq!(
        gw.get("/api/v1/sessions").0,
        200,
        "the operator's own address is not"
    );
    assert!(gw
        .audit("auth.throttled")
        .iter()
        .any(|e| e["detail"]["source"] == ATTACKER));
}

/// A 30 KB login and escape sequences in a login and in a terminate reason: capped and escaped
/// where they are stored, served and printed; `wgctl audit list` neither panics nor lets a
/// terminal act on them.
#[test]
fn hostile_names_are_capped_and_escaped() {
    let (env, _sshd, gw) = standard();
    let rt = hostile::runtime();
    let huge = format!("{}:web-01.test", "A".repeat(30_000));
    let fake = "\u{1b}[2J\u{1b}[31mFAKE NOTICE\u{1b}[0m:web-01.test";
    for login in [huge.as_str(), fake] {
        let a = rt.block_on(hostile::ssh_password("127.0.0.1", gw.ssh_port, login, "x"));
        assert_ne!(a, hostile::Attempt::Accepted);
    }
    // A live session terminated with a reason that would clear the user's screen.
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.args(["-o", "LogLevel=INFO"]).arg("sleep 60");
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("ssh");
    let id = gw.wait_one_active();
    let (code, body) = gw.post(
        &format!("/api/v1/sessions/{id}/terminate"),
        &serde_json::json!({"reason": "\u{1b}[2Jbye\u{7}"}).to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let _ = wait_timeout(&mut child, T);
    let err = stderr_of(&mut child);
    assert!(
        !err.contains('\u{1b}'),
        "the user's terminal got an escape: {err:?}"
    );
    // (OpenSSH escapes the backslash of the gateway's escape once more when it prints it.)
    assert!(err.contains("x1b[2Jbye"), "{err:?}");

    let events = gw.audit("auth.failed");
    for e in &events {
        let login = e["detail"]["login"].as_str().unwrap_or_default();
        assert!(
            login.len() <= 256,
            "a {} byte login was stored",
            login.len()
        );
        assert!(!login.contains('\u{1b}'), "raw escape stored: {login:?}");
    }
    assert!(events.iter().any(|e| e["detail"]["login"]
        .as_str()
        .is_some_and(|l| l.starts_with("\\x1b[2J"))));
    let out = run(gw.wgctl().args(["audit", "list", "--limit", "1000"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "escape printed"
    );
    assert!(shown.contains("\\x1b[2J"), "{shown}");
    assert!(
        shown.lines().all(|l| l.chars().count() < 700),
        "a line was not cut"
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["end_detail"], "\\x1b[2Jbye\\x07", "{s}");
    let show = text(&run(gw.wgctl().args(["session", "show", &id]), T).stdout);
    assert!(show.contains("terminated by: admin"), "{show}");
    assert!(!show.contains('\u{1b}'), "{show}");
    // The gateway's log is not a terminal here: no colour codes in it.
    assert!(!gw.log().contains('\u{1b}'), "ANSI codes in a log file");
}
