//! Port forwarding destinations, PostgreSQL cancel-key guessing, and the smaller findings.

use std::io::{Read, Write};
use std::time::Duration;

use wardengate_tests::hostile::{self, ATTACKER};
use wardengate_tests::pg::pg_standard;
use wardengate_tests::*;

use super::T;

fn echo_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `ssh -W` to the gateway's own API, to the cloud metadata address and to a host the policy
/// does not list are refused and audited; a destination the policy names works.
#[test]
fn forwarding_goes_only_where_the_policy_says() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let echo = echo_server();
    let gw = env
        .gateway()
        .target("web-01.test", &sshd)
        .policies(&format!(
            "[[policies]]\nname = \"fwd\"\ngroups = [\"sre\"]\nallow_port_forwarding = true\n\
             forward_to = [\"target\", \"127.0.0.1:{echo}\", \"*.internal:5432\"]\n"
        ))
        .start();
    let api = gw.api_port();
    for (dest, why) in [
        (format!("127.0.0.1:{api}"), "loopback or link-local"),
        ("169.254.169.254:80".to_string(), "loopback or link-local"),
        ("localhost:22".to_string(), "loopback or link-local"),
        (
            "10.20.30.40:22".to_string(),
            "not in the policy's forward_to",
        ),
    ] {
        let out = run(
            gw.ssh(&env, "alice:web-01.test")
                .args(["-W", &dest, "-o", "LogLevel=INFO"]),
            T,
        );
        assert!(!out.status.success(), "{dest} was forwarded");
        assert_stderr_has(&out, why);
    }
    // Named explicitly: works.
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.args(["-W", &format!("127.0.0.1:{echo}")]);
    let out = run_with_input(&mut c, Some(b"through the tunnel".to_vec()), T);
    assert_eq!(
        text(&out.stdout),
        "through the tunnel",
        "{}",
        text(&out.stderr)
    );
    let forwards = gw.audit("session.forward");
    assert_eq!(forwards.len(), 5, "{forwards:?}");
    let refused: Vec<_> = forwards
        .iter()
        .filter(|e| e["detail"]["allowed"] == false)
        .collect();
    assert_eq!(refused.len(), 4);
    assert!(forwards
        .iter()
        .any(|e| e["detail"]["destination"] == "169.254.169.254:80"
            && e["detail"]["allowed"] == false));
}

/// One address sends CancelRequests with guessed keys as fast as it can: they are rate-limited,
/// the log gets a summary instead of a line per guess, the audit one event, and a real cancel
/// from another client still works.
#[test]
fn cancel_key_guessing_is_rate_limited_and_summarised() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("postgres");
    let rt = hostile::runtime();
    let sent = rt.block_on(async {
        let mut sent = 0u32;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            let Ok(mut s) = hostile::tcp_from(ATTACKER, port).await else {
                continue;
            };
            use tokio::io::AsyncWriteExt;
            let mut req = Vec::new();
            req.extend_from_slice(&16u32.to_be_bytes());
            req.extend_from_slice(&80877102u32.to_be_bytes());
            req.extend_from_slice(&(sent as i32 + 1000).to_be_bytes());
            req.extend_from_slice(&(sent as i32).wrapping_mul(7919).to_be_bytes());
            if s.write_all(&req).await.is_ok() {
                sent += 1;
            }
        }
        sent
    });
    assert!(sent > 200, "the flood ran ({sent} requests)");
    // A real cancel, from the real client, works meanwhile.
    rt.block_on(async {
        let (client, _rx) = wardengate_tests::pg::driver(port, "").await;
        let token = client.cancel_token();
        let sleeper = client.query("select pg_sleep(30)", &[]);
        let canceller = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel request");
        };
        let (r, ()) = tokio::join!(sleeper, canceller);
        let e = r.expect_err("the sleep was cancelled");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{e}"
        );
    });
    // One event per source and sweep (every 15 s): a sweep can fall inside the flood, so the
    // drops may be reported over two events.
    let ev = gw.wait_audit("postgres.cancel_flood", Duration::from_secs(30));
    assert_eq!(ev["detail"]["source"], ATTACKER, "{ev}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        let events = gw.audit("postgres.cancel_flood");
        let dropped: u64 = events
            .iter()
            .filter(|e| e["detail"]["source"] == ATTACKER)
            .map(|e| e["detail"]["dropped"].as_u64().unwrap_or(0))
            .sum();
        if dropped > 0 || std::time::Instant::now() > deadline {
            break (dropped, events);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(dropped.0 > 0, "no drops reported: {:?}", dropped.1);
    let per_guess = gw.log().matches("unknown key").count();
    assert!(per_guess < 5, "{per_guess} log lines for {sent} guesses");
}

/// The smaller findings: nosniff everywhere, a 413 in the API's JSON shape, denials that name
/// only what the user may reach, an RDP target asked for over SSH, and `wgctl audit list`
/// naming the event that breaks the chain. (No recording for a refused session: in
/// `data::a_hijacked_account_password_is_detected`.)
#[test]
fn the_smaller_findings() {
    let dead = wardengate_dev::sshd::free_port().expect("port");
    let (env, _sshd, gw) = with_gateway(|env, sshd| {
        env.gateway()
            .target("web-01.test", sshd)
            .target_at("down.test", &format!("127.0.0.1:{dead}"), &sshd.user)
            .rdp_target("win.test", "127.0.0.1:9", "bob", "unused")
            .extra(&format!(
                "[[targets]]\nname = \"db-01.prod\"\naddress = \"{}\"\ntags = {{ env = \"prod\" }}\naccounts = [{{ name = \"x\", secret = \"db/x\" }}]\n\n",
                sshd.address()
            ))
            .start()
    });
    let http = reqwest::blocking::Client::new();
    for path in [
        "/healthz",
        "/api/v1/sessions",
        "/api/v1/openapi.json",
        "/nope",
    ] {
        let r = http.get(format!("{}{path}", gw.api)).send().expect("get");
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
    // The gateway answers 413 as soon as the body passes its bound and closes; a client still
    // writing the rest may then see a broken pipe instead of the answer, so it asks again
    // (a few times at most) until it reads the answer.
    let r = (0..5)
        .find_map(|_| {
            match http
                .post(format!("{}/api/v1/sessions/sess_x/terminate", gw.api))
                .bearer_auth(&gw.token)
                .header("content-type", "application/json")
                .body(vec![b' '; 4 << 20])
                .send()
            {
                Ok(r) => Some(r),
                Err(e) if e.is_request() => None,
                Err(e) => panic!("post: {e}"),
            }
        })
        .expect("an answer to one of five oversized posts");
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().expect("a JSON error body");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );

    let out = run(gw.ssh(&env, "alice:nope.test").arg("true"), T);
    let err = text(&out.stderr);
    assert!(
        err.contains("targets you may reach with ssh: down.test, web-01.test"),
        "{err}"
    );
    assert!(
        !err.contains("db-01.prod") && !err.contains("win.test"),
        "{err}"
    );

    let out = run(gw.ssh(&env, "alice:win.test").arg("true"), T);
    assert_stderr_has(&out, "connect with an RDP client, e.g. xfreerdp");

    // Break the chain behind the gateway's back.
    let db = rusqlite::Connection::open(gw.data.join("wardengate.db")).expect("db");
    db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .expect("tamper");
    let out = run(gw.wgctl().args(["audit", "list"]), T);
    let shown = text(&out.stdout);
    assert_has_all(&shown, &["hash chain: BROKEN: event #2 ", "was edited"]);
}

/// A protocol 3.2 client (PostgreSQL 18's libpq can ask for it) gets a 32-byte cancel key
/// instead of 4 bytes, and cancelling with it works; 3.0 clients keep theirs.
#[test]
fn protocol_3_2_clients_get_long_cancel_keys() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("postgres");
    for (minor, key_len) in [(2u16, 32usize), (0, 4)] {
        let (mut r, after) =
            wardengate_tests::pg::Raw::login_minor(port, "alice#billing.test", minor);
        assert!(
            !after.iter().any(|(t, _)| *t == b'v'),
            "3.{minor} needs no NegotiateProtocolVersion"
        );
        let (_, key) = after
            .iter()
            .find(|(t, _)| *t == b'K')
            .expect("BackendKeyData");
        assert_eq!(key.len(), 4 + key_len, "3.{minor}");
        let mut q = b"select pg_sleep(30)\0".to_vec();
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((q.len() + 4) as u32).to_be_bytes());
        msg.append(&mut q);
        r.send(&msg);
        std::thread::sleep(Duration::from_millis(500));
        let mut cancel = ((8 + key.len()) as u32).to_be_bytes().to_vec();
        cancel.extend_from_slice(&80877102u32.to_be_bytes());
        cancel.extend_from_slice(key);
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(&cancel).expect("cancel request");
        let answer = r.until(b'Z');
        let err = answer
            .iter()
            .find(|(t, _)| *t == b'E')
            .expect("the statement was cancelled");
        assert_eq!(
            wardengate_tests::pg::field(&err.1, 'C'),
            "57014",
            "3.{minor}"
        );
    }
}
