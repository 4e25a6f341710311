//! A session's life: the connection limit, unlimited connections, cancel, expiration, the host
//! set, and the States history and recording of each.

use std::time::Duration;

use wardengate_dev::services;
use wardengate_tests::tcp::{authorized, redis_cli, wgctl_as, Proxy, Resp};
use wardengate_tests::{assert_success, run, TestEnv};

use super::{assert_timed, ended, gateway, session, states, ALICE};

/// What a token says (its first part, base64url JSON).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let body = token
        .strip_prefix("wgtcp_")
        .and_then(|b| b.split_once('.'))
        .expect("token")
        .0;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .expect("base64");
    serde_json::from_slice(&raw).expect("claims")
}

fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_string(), r.to_string())
}

#[test]
fn connection_limit_one_then_refused_states_and_recording() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{}\"\ntags = {{ env = \"test\" }}\n\n",
        redis.address()
    );
    let gw = gateway(&env, &targets, None);
    let a = authorized(&gw, ALICE, "cache", &[]);
    assert_eq!(a["type"], "tcp");
    assert_eq!(a["connection_limit"], 1, "the default limit: {a:#}");
    assert_eq!(a["host_id"], "h1");
    let id = a["session_id"].as_str().expect("id").to_string();
    assert_eq!(session(&gw, &id)["state"], "pending");
    // The table form is Boundary's block.
    let out = run(
        wgctl_as(&gw, ALICE).args(["session", "show", &id]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("States:") && text.contains("Status:       pending"),
        "{text}"
    );

    let mut proxy = Proxy::start(
        &gw,
        ALICE,
        a["authorization_token"].as_str().expect("token"),
    );
    let mut first = Resp::connect(proxy.port);
    assert_eq!(
        first.command(&["SET", "greeting", "hello"]).as_deref(),
        Some("+OK")
    );
    let s = session(&gw, &id);
    assert_eq!(s["state"], "active", "{s:#}");
    assert_eq!(s["tcp"]["connections"], 1);
    // A second connection while the first is open: over the limit, refused, and wgctl says so.
    let second = redis_cli(proxy.port, &["PING"]);
    assert!(!String::from_utf8_lossy(&second.stdout).contains("PONG"));
    wardengate_tests::wait_for_text(
        "wgctl proxy's stderr",
        "reached its connection limit (1)",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || proxy.stderr(),
    );
    assert_eq!(first.command(&["GET", "greeting"]).as_deref(), Some("$5"));
    drop(first);
    // The only allowed connection closed: the session is over, and the proxy with it.
    let s = ended(&gw, &id);
    assert_eq!(s["end_reason"], "connection_limit", "{s:#}");
    assert_eq!(
        states(&s),
        vec![
            pair("pending", ""),
            pair("active", ""),
            pair("terminated", "connection_limit")
        ]
    );
    assert_timed(&s);
    assert!(
        proxy.exited_within(Duration::from_secs(10)),
        "{}",
        proxy.stderr()
    );
    let refused = gw.audit("tcp.refused");
    assert!(
        refused
            .iter()
            .any(|e| e["detail"]["reason"] == "connection_limit"),
        "{refused:#?}"
    );

    // The recording verifies and replays the redis commands, both ways.
    let sealed = gw.wait_sealed(&id);
    assert_eq!(sealed["recording"]["status"], "complete", "{sealed:#}");
    let verify = run(
        gw.wgctl().args(["recording", "verify", &id]),
        Duration::from_secs(30),
    );
    assert_success(&verify, "recording verify");
    let text = gw.recording_export(&id, "text");
    assert!(
        text.contains(r"#1 > *3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$5\r\nhello\r\n"),
        "{text}"
    );
    assert!(text.contains(r"#1 < +OK\r\n"), "{text}");
    assert!(text.contains(r"#1 < $5\r\nhello\r\n"), "{text}");
    assert!(text.contains("-- connection-end"), "{text}");
    let jsonl = gw.recording_export(&id, "jsonl");
    assert!(jsonl.contains("\"type\":\"stream\""), "{jsonl}");
}

#[test]
fn unlimited_connections_connect_and_cancel() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\
         session_connection_limit = -1\ntags = {{ env = \"test\" }}\n\n",
        redis.address()
    );
    let gw = gateway(&env, &targets, None);

    // `wgctl connect`: authorize, proxy, the client, and the session closes with it.
    let out = run(
        wgctl_as(&gw, ALICE).args([
            "connect",
            "cache",
            "--",
            "redis-cli",
            "-p",
            "{port}",
            "INCRBY",
            "visits",
            "41",
        ]),
        Duration::from_secs(30),
    );
    assert_success(&out, "wgctl connect");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "41");
    let out = run(
        wgctl_as(&gw, ALICE).args(["connect", "redis", "cache", "--", "INCR", "visits"]),
        Duration::from_secs(30),
    );
    assert_success(&out, "wgctl connect redis");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let closed = gw.sessions("?protocol=tcp&state=terminated");
    assert_eq!(closed.len(), 2, "{closed:#?}");
    for s in &closed {
        assert_eq!(s["end_reason"], "closed_by_client", "{s:#}");
        assert_eq!(
            states(s).last(),
            Some(&pair("terminated", "closed_by_client"))
        );
    }

    // Many connections through one proxy, then a cancel ends the ones still open.
    let a = authorized(&gw, ALICE, "cache", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    let mut proxy = Proxy::start(
        &gw,
        ALICE,
        a["authorization_token"].as_str().expect("token"),
    );
    for _ in 0..5 {
        let out = redis_cli(proxy.port, &["INCR", "visits"]);
        assert_success(&out, "redis-cli through the proxy");
    }
    // 40 connections opened at once (redis-benchmark's clients): none meets the listener's
    // per-source cap or the token throttle.
    let bench = run(
        std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &proxy.port.to_string()])
            .args(["-c", "40", "-n", "4000", "-t", "ping_inline", "-q"]),
        Duration::from_secs(60),
    );
    assert_success(&bench, "redis-benchmark through the proxy");
    assert!(
        !proxy.stderr().contains("connection failed"),
        "{}",
        proxy.stderr()
    );
    let mut held = Resp::connect(proxy.port);
    assert_eq!(held.command(&["PING"]).as_deref(), Some("+PONG"));
    let made = session(&gw, &id)["tcp"]["connections"]
        .as_u64()
        .unwrap_or(0);
    assert!(made >= 46, "5 + 40 + 1 connections, got {made}");
    let no_reason = run(
        wgctl_as(&gw, ALICE).args(["session", "cancel", &id]),
        Duration::from_secs(20),
    );
    assert!(!no_reason.status.success());
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("--reason is required"));
    let out = run(
        wgctl_as(&gw, ALICE).args(["session", "cancel", &id, "--reason", "done for today"]),
        Duration::from_secs(20),
    );
    assert_success(&out, "wgctl session cancel");
    assert!(
        held.closed_within(Duration::from_secs(10)),
        "the open connection was cut"
    );
    let s = ended(&gw, &id);
    assert_eq!(s["end_reason"], "canceled");
    assert_eq!(s["end_detail"], "canceled by alice: done for today");
    assert_eq!(
        states(&s),
        vec![
            pair("pending", ""),
            pair("active", ""),
            pair("canceling", "canceled"),
            pair("terminated", "canceled")
        ]
    );
    assert_timed(&s);
    assert!(
        proxy.exited_within(Duration::from_secs(10)),
        "{}",
        proxy.stderr()
    );
    assert!(
        proxy.stderr().contains("ended (canceled)"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(redis_cli(redis.port, &["GET", "visits"]).stdout, b"47\n");
}

#[test]
fn expiration_ends_live_connections_and_admin_terminate() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"brief\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n\
         session_max_seconds = 3\ntags = {{ env = \"test\" }}\n\n\
         [[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\ntags = {{ env = \"test\" }}\n\n",
        addr = redis.address()
    );
    let gw = gateway(&env, &targets, None);
    let a = authorized(&gw, ALICE, "brief", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    let token = a["authorization_token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut proxy = Proxy::start(&gw, ALICE, &token);
    let mut held = Resp::connect(proxy.port);
    assert_eq!(held.command(&["PING"]).as_deref(), Some("+PONG"));
    assert!(
        held.closed_within(Duration::from_secs(10)),
        "expiration cut the connection"
    );
    let s = ended(&gw, &id);
    assert_eq!(s["end_reason"], "expired", "{s:#}");
    assert_eq!(
        states(&s),
        vec![
            pair("pending", ""),
            pair("active", ""),
            pair("canceling", "expired"),
            pair("terminated", "expired")
        ]
    );
    assert!(
        proxy.exited_within(Duration::from_secs(10)),
        "{}",
        proxy.stderr()
    );

    // An operator's terminate: the reason names who and why.
    let a = authorized(&gw, ALICE, "cache", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    let out = gw.terminate(&id, "maintenance window");
    assert_success(&out, "terminate");
    let s = ended(&gw, &id);
    assert_eq!(
        states(&s),
        vec![
            pair("pending", ""),
            pair("terminated", "terminated by admin: maintenance window")
        ]
    );
}

#[test]
fn host_set_random_or_chosen() {
    let env = TestEnv::new();
    let one = services::redis(&env.path("redis-1"), 0).expect("redis-server");
    let two = services::redis(&env.path("redis-2"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"shards\"\nprotocol = \"tcp\"\nhosts = [\"127.0.0.1\", \"127.0.0.1:{}\"]\n\
         default_port = {}\nsession_connection_limit = -1\ntags = {{ env = \"test\" }}\n\n",
        two.port, one.port
    );
    let gw = gateway(&env, &targets, None);
    // --host-id names one: its connections go there.
    let a = authorized(&gw, ALICE, "shards", &["--host-id", "h2"]);
    assert_eq!(a["host_id"], "h2");
    let id = a["session_id"].as_str().expect("id");
    assert_eq!(session(&gw, id)["target_addr"], two.address());
    let proxy = Proxy::start(
        &gw,
        ALICE,
        a["authorization_token"].as_str().expect("token"),
    );
    // The first use of alice's token on this gateway is 30 connections at once: none meets the
    // listener's per-source cap or the token throttle's limit on attempts in flight.
    let port = proxy.port;
    let burst: Vec<_> = (0..30)
        .map(|_| std::thread::spawn(move || Resp::connect(port).command(&["PING"])))
        .collect();
    for b in burst {
        assert_eq!(
            b.join().expect("thread").as_deref(),
            Some("+PONG"),
            "{}",
            proxy.stderr()
        );
    }
    assert!(!proxy.stderr().contains("wgctl:"), "{}", proxy.stderr());
    assert_eq!(session(&gw, id)["tcp"]["connections"], 30);
    assert_success(&redis_cli(proxy.port, &["SET", "where", "two"]), "SET");
    assert_eq!(redis_cli(two.port, &["GET", "where"]).stdout, b"two\n");
    assert_eq!(redis_cli(one.port, &["GET", "where"]).stdout, b"\n");
    // The address names it too; an unknown one is refused with the set listed.
    let a = authorized(&gw, ALICE, "shards", &["--host-id", &one.address()]);
    assert_eq!(a["host_id"], "h1");
    let bad = wardengate_tests::tcp::authorize(&gw, ALICE, "shards", &["--host-id", "h9"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("has no host 'h9'") && err.contains(&format!("h2 = {}", two.address())),
        "{err}"
    );
    // Without one, a host at random: over 24 sessions both come up.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let a = authorized(&gw, ALICE, "shards", &[]);
        seen.insert(a["host_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["h1", "h2"]);
}

#[test]
fn idle_counts_client_data_and_a_restart_ends_what_was_open() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\
         session_connection_limit = -1\ntags = {{ env = \"test\" }}\n\n",
        redis.address()
    );
    let policy =
        "[[policies]]\nname = \"brisk\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\
                  idle_timeout = \"2s\"\nmax_lifespan = \"1h\"\n";
    // The listener keeps its port across the restart below (tokens name it).
    let port = wardengate_dev::sshd::free_port().expect("port");
    let mut gw = super::gateway_on(&env, &targets, Some(policy), port);
    let a = authorized(&gw, ALICE, "cache", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    // The policy's max_lifespan (1h) is shorter than the target's 8h default: it sets the expiry.
    let exp_ms = claims(a["authorization_token"].as_str().expect("token"))["exp_ms"]
        .as_u64()
        .expect("exp_ms");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        (3_500_000..=3_600_000).contains(&(exp_ms - now_ms)),
        "{exp_ms} - {now_ms}"
    );
    let proxy = Proxy::start(
        &gw,
        ALICE,
        a["authorization_token"].as_str().expect("token"),
    );
    let mut held = Resp::connect(proxy.port);
    // Client data every second for 4 s (twice the idle timeout): the session stays.
    for _ in 0..4 {
        assert_eq!(held.command(&["PING"]).as_deref(), Some("+PONG"));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(session(&gw, &id)["state"], "active");
    // Then nothing: idle ends it, and its connection.
    assert!(held.closed_within(Duration::from_secs(10)));
    let s = ended(&gw, &id);
    assert_eq!(s["end_reason"], "idle", "{s:#}");
    drop(proxy);

    // A graceful stop ends a live session (its connection cut, its recording sealed whole).
    let a = authorized(&gw, ALICE, "cache", &[]);
    let stopped = a["session_id"].as_str().expect("id").to_string();
    let proxy = Proxy::start(
        &gw,
        ALICE,
        a["authorization_token"].as_str().expect("token"),
    );
    let mut held = Resp::connect(proxy.port);
    assert_eq!(held.command(&["PING"]).as_deref(), Some("+PONG"));
    assert!(gw.stop().is_some_and(|s| s.success()), "{}", gw.log());
    assert!(held.closed_within(Duration::from_secs(10)));
    drop(proxy);
    let mut gw = wardengate_tests::GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    let s = gw.wait_sealed(&stopped);
    assert_eq!(s["end_reason"], "gateway_shutdown", "{s:#}");
    assert_eq!(s["recording"]["status"], "complete", "{s:#}");
    assert_eq!(
        states(&s).last(),
        Some(&pair("terminated", "gateway_shutdown"))
    );

    // A session open when the gateway dies is over after it restarts, its states closed.
    let a = authorized(&gw, ALICE, "cache", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    gw.kill9();
    let gw = wardengate_tests::GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    let s = session(&gw, &id);
    assert_eq!(s["state"], "terminated", "{s:#}");
    assert_eq!(s["end_reason"], "gateway_restart");
    assert_eq!(
        states(&s),
        vec![pair("pending", ""), pair("terminated", "gateway_restart")]
    );
    // Its token died with the session (wgctl says so) and with the gateway's key.
    let token = a["authorization_token"].as_str().expect("token");
    let said = Proxy::try_start(&gw, ALICE, token).err().expect("refused");
    assert!(said.contains("has ended (gateway_restart)"), "{said}");
    let r = wardengate_tests::tcp::hello(&gw, token, ALICE);
    assert_eq!(r["reason"], "forged_token", "{r}");
}
