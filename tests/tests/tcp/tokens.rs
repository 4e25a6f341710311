//! The authorization token and the `[tcp]` listener under attack: a token altered, expired,
//! replayed after its session ended, or used by another person; a caller who is nobody; and
//! connections that never say anything, or say too much.

use std::io::{Read, Write};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use wardengate_dev::services;
use wardengate_tests::tcp::{authorized, hello, Proxy, Resp};
use wardengate_tests::{run, TestEnv};

use super::{ended, gateway, ALICE, BOB};

/// The token with its claims rewritten by `edit`, its signature kept.
fn tampered(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let body = token.strip_prefix("wgtcp_").expect("prefix");
    let (claims, sig) = body.split_once('.').expect("two parts");
    let mut v: serde_json::Value =
        serde_json::from_slice(&B64.decode(claims).expect("base64")).expect("json");
    edit(&mut v);
    format!("wgtcp_{}.{sig}", B64.encode(v.to_string()))
}

/// Start a proxy with `authz` as `who`, try one connection, and return what the proxy said.
fn refusal(gw: &wardengate_tests::GatewayProc, who: &str, authz: &str, needle: &str) -> String {
    let proxy = Proxy::start(gw, who, authz);
    let mut c = Resp::connect(proxy.port);
    assert_eq!(
        c.command(&["PING"]),
        None,
        "the connection must not reach redis"
    );
    wardengate_tests::wait_for_text(
        "wgctl proxy's stderr",
        needle,
        Duration::from_secs(10),
        Duration::from_millis(50),
        || proxy.stderr(),
    )
}

#[test]
fn tokens_altered_expired_replayed_or_foreign_are_refused() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n\
         session_connection_limit = -1\ntags = {{ env = \"test\" }}\n\n\
         [[targets]]\nname = \"brief\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n\
         session_max_seconds = 1\ntags = {{ env = \"test\" }}\n\n",
        addr = redis.address()
    );
    let gw = gateway(&env, &targets, None);
    let a = authorized(&gw, ALICE, "cache", &[]);
    let token = a["authorization_token"]
        .as_str()
        .expect("token")
        .to_string();
    let id = a["session_id"].as_str().expect("id").to_string();

    // Claims rewritten (a bigger limit, a later expiry): wgctl's own check through the API
    // passes (same session, listener and certificate); the gateway finds the signature wrong.
    for edit in [
        Box::new(|v: &mut serde_json::Value| v["connection_limit"] = 100.into())
            as Box<dyn FnOnce(&mut serde_json::Value)>,
        Box::new(|v: &mut serde_json::Value| v["exp_ms"] = (u64::MAX / 2).into()),
    ] {
        let forged = tampered(&token, edit);
        refusal(
            &gw,
            ALICE,
            &forged,
            "the authorization token is not genuine",
        );
    }
    // A token naming another session: wgctl refuses before it sends anything; a client that
    // does send it is refused by the gateway.
    let other = tampered(&token, |v| v["sid"] = "sess_someone_elses".into());
    let said = Proxy::try_start(&gw, ALICE, &other).err().expect("refused");
    assert!(
        said.contains("does not know session sess_someone_elses as yours"),
        "{said}"
    );
    let r = hello(&gw, &other, ALICE);
    assert_eq!(r["reason"], "forged_token", "{r}");
    // A token naming someone else's listener (with the session's real id): wgctl does not
    // connect there, so the person's own API token never reaches it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let elsewhere = tampered(&token, |v| {
        v["endpoint"] = trap.local_addr().expect("addr").to_string().into()
    });
    let said = Proxy::try_start(&gw, ALICE, &elsewhere)
        .err()
        .expect("refused");
    assert!(
        said.contains("refusing to send your credentials there"),
        "{said}"
    );
    assert!(
        trap.accept().is_err(),
        "nothing connected to the other listener"
    );
    // Another person with alice's token: wgctl (bob's API sees no such session of his) and
    // the gateway both refuse.
    let said = Proxy::try_start(&gw, BOB, &token).err().expect("refused");
    assert!(said.contains("as yours"), "{said}");
    let r = hello(&gw, &token, BOB);
    assert_eq!(r["reason"], "foreign_token", "{r}");
    let msg = r["error"].as_str().unwrap_or_default();
    assert!(msg.contains("was issued to another user, not bob"), "{r}");
    assert!(msg.contains("wgctl target authorize cache"), "{r}");
    // Nobody (a wrong API token): the one refusal, whatever else is wrong.
    for authz in [token.as_str(), "wgtcp_garbage.garbage", ""] {
        let r = hello(&gw, authz, "not-a-token");
        assert_eq!(r["reason"], "not_authorized", "{r}");
        assert_eq!(
            r["error"],
            wardengate_gateway::tcp::front::NOT_AUTHORIZED,
            "{r}"
        );
    }
    let audited = gw.audit("tcp.refused");
    for reason in ["not_authenticated", "foreign_token", "forged_token"] {
        assert!(
            audited.iter().any(|e| e["detail"]["reason"] == reason),
            "{reason}: {audited:#?}"
        );
    }
    // None of those became a connection of the session.
    assert_eq!(super::session(&gw, &id)["tcp"]["connections"], 0);

    // Replayed after the session ended: wgctl says so before connecting; the gateway too.
    let out = gw.terminate(&id, "rotate");
    wardengate_tests::assert_success(&out, "terminate");
    ended(&gw, &id);
    let said = Proxy::try_start(&gw, ALICE, &token).err().expect("refused");
    assert!(
        said.contains(&format!("session {id} has ended (terminated)")),
        "{said}"
    );
    let r = hello(&gw, &token, ALICE);
    assert_eq!(r["reason"], "session_ended", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("has ended (terminated)"),
        "{r}"
    );

    // Expired.
    let brief = authorized(&gw, ALICE, "brief", &[]);
    let brief_id = brief["session_id"].as_str().expect("id");
    ended(&gw, brief_id);
    let t = brief["authorization_token"].as_str().expect("token");
    let r = hello(&gw, t, ALICE);
    assert_eq!(r["reason"], "expired_token", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the authorization token expired at"),
        "{r}"
    );
}

#[test]
fn the_tcp_listener_bounds_what_it_reads_and_how_long() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{}\"\ntags = {{ env = \"test\" }}\n\n",
        redis.address()
    );
    let env_gw = gateway(&env, &targets, None);
    let gw = &env_gw;
    let port = gw.tcp_port.expect("tcp listener");
    // Not TLS at all: closed without a word.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP"), "{buf:?}");
    // A first line past its bound (a token padded to 64 KiB): the gateway stops reading and
    // closes; the session gets no connection.
    let a = authorized(gw, ALICE, "cache", &[]);
    let token = a["authorization_token"].as_str().expect("token");
    let padded = tampered(token, |v| v["pad"] = "x".repeat(64 * 1024).into());
    let proxy = Proxy::start(gw, ALICE, &padded);
    let mut c = Resp::connect(proxy.port);
    assert_eq!(c.command(&["PING"]), None);
    wardengate_tests::wait_for_text(
        "wgctl proxy's stderr",
        "closed the connection",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || proxy.stderr(),
    );
    let id = a["session_id"].as_str().expect("id");
    assert_eq!(super::session(gw, id)["tcp"]["connections"], 0);
    // A silent connection is closed at auth_timeout (2s here).
    let mut stall = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stall
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut b = [0u8; 1];
    assert!(
        matches!(stall.read(&mut b), Ok(0)),
        "the gateway closed it (our own 15 s read timeout did not pass)"
    );
    // Silent connections from one source hold at most max_unauthenticated_per_source slots
    // (16): past them, a connection is closed at once.
    let held: Vec<std::net::TcpStream> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(extra.read(&mut b), Ok(0) | Err(_)));
    drop(held);
    // Through it all, a real session still works.
    let proxy = Proxy::start(gw, ALICE, token);
    let out = run(
        std::process::Command::new("redis-cli").args(["-p", &proxy.port.to_string(), "PING"]),
        Duration::from_secs(20),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}
