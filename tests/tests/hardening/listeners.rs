//! Every listener closes a connection that does not authenticate in time, and caps the
//! unauthenticated connections per source, so stalled clients cannot lock others out.

use std::io::{Read, Write};
use std::time::Duration;

use wardengate_tests::hostile::{self, closed_within, std_tcp_from, ATTACKER};
use wardengate_tests::pg::{cluster, pg_targets};
use wardengate_tests::*;

use super::T;

/// 200 silent connections from one address, then connections that stop after the banner, after
/// key exchange, inside SCRAM, before NLA and inside HTTP headers: the first few take that
/// address's slots until the deadline, the rest are closed at once, and alice on her own
/// address logs in meanwhile. The refusals are audited once, not 192 times.
#[test]
fn stalled_connections_are_closed_at_the_deadline_and_capped_per_source() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let pg = cluster(&env);
    let gw = pg_targets(env.gateway().target("web-01.test", &sshd), &pg)
        // An RDP target that is never reached: it turns the RDP listener on.
        .rdp_target("win.test", "127.0.0.1:9", "bob", "unused")
        .security_lines("auth_timeout = \"3s\"\nmax_unauthenticated_per_source = 8")
        .start();

    // SSH: 200 silent connections from the attacker's address.
    let mut conns: Vec<_> = (0..200)
        .map(|_| std_tcp_from(ATTACKER, gw.ssh_port).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed_at_once = 0;
    let mut held = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        match closed_within(c, Duration::from_millis(50)) {
            Some(_) => closed_at_once += 1,
            None => held.push(i),
        }
    }
    assert_eq!(
        held.len(),
        8,
        "the per-source cap holds 8 ({closed_at_once} closed at once)"
    );
    // Meanwhile alice, from her own address.
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("echo in"), T);
    assert_eq!(text(&out.stdout).trim(), "in", "{}", text(&out.stderr));
    for i in held {
        let took = closed_within(&mut conns[i], Duration::from_secs(15));
        assert!(
            took.is_some(),
            "a silent SSH connection outlived auth_timeout"
        );
    }
    let refused: Vec<_> = gw
        .audit("connection.refused")
        .into_iter()
        .filter(|e| e["detail"]["source"] == ATTACKER && e["detail"]["listener"] == "ssh")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one audit event for the burst: {refused:?}"
    );

    // SSH: the banner, then nothing.
    let mut c = std_tcp_from(ATTACKER, gw.ssh_port).expect("connect");
    c.write_all(b"SSH-2.0-stall\r\n").expect("banner");
    let took = closed_within(&mut c, Duration::from_secs(15)).expect("closed after the banner");
    assert!(took >= Duration::from_secs(2), "closed too early: {took:?}");

    // SSH: key exchange done, no authentication.
    let rt = hostile::runtime();
    let h = rt
        .block_on(hostile::ssh_after_kex(ATTACKER, gw.ssh_port))
        .expect("key exchange");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        h.is_closed(),
        "a connection stuck after key exchange outlived auth_timeout"
    );

    // PostgreSQL: the startup message, then silence inside SCRAM.
    let port = gw.pg_port.expect("postgres");
    let mut raw = wardengate_tests::pg::Raw {
        s: std_tcp_from(ATTACKER, port).expect("connect"),
    };
    raw.s.set_read_timeout(Some(T)).expect("timeout");
    raw.startup("alice#billing.test");
    let (tag, _) = raw.recv().expect("the SASL request");
    assert_eq!(tag, b'R');
    let took = closed_within(&mut raw.s, Duration::from_secs(15)).expect("closed inside SCRAM");
    assert!(took >= Duration::from_secs(2), "closed too early: {took:?}");

    // RDP: connected, nothing sent.
    let mut c = std_tcp_from(ATTACKER, gw.rdp_port.expect("rdp")).expect("connect");
    assert!(
        closed_within(&mut c, Duration::from_secs(15)).is_some(),
        "RDP before NLA"
    );

    // The API: headers that never end.
    let api_port = gw.api_port();
    let mut c = std_tcp_from(ATTACKER, api_port).expect("connect");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("half a request");
    let mut seen = Vec::new();
    let took = closed_within(&mut c, Duration::from_secs(15));
    let _ = c.read_to_end(&mut seen);
    assert!(
        took.is_some(),
        "an API connection trickling headers outlived the deadline"
    );
}

/// The API's cap on connections per source does not hold back a trusted proxy (its connections
/// carry everyone's requests, which the API counts by the forwarded address); an untrusted
/// source is held to it, and the proxy's connections are all served.
#[test]
fn a_trusted_proxy_is_not_held_to_the_apis_per_source_cap() {
    const PROXY: &str = "127.0.0.3";
    let env = TestEnv::new();
    let gw = env
        .gateway()
        .api_lines(&format!("trusted_proxies = [\"{PROXY}\"]"))
        .security_lines("api_connections_per_source = 4")
        .start();
    let port = gw.api_port();
    let open = |from: &str| -> Vec<std::net::TcpStream> {
        (0..12)
            .map(|_| std_tcp_from(from, port).expect("connect"))
            .collect()
    };
    let mut proxy = open(PROXY);
    let mut attacker = open(ATTACKER);
    std::thread::sleep(Duration::from_millis(300));
    let still_open = |conns: &mut Vec<std::net::TcpStream>| {
        conns
            .iter_mut()
            .map(|c| closed_within(c, Duration::from_millis(50)))
            .filter(Option::is_none)
            .count()
    };
    assert_eq!(
        still_open(&mut attacker),
        4,
        "an untrusted source is capped"
    );
    assert_eq!(still_open(&mut proxy), 12, "the trusted proxy was capped");
    for c in proxy.iter_mut() {
        c.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n\
              Connection: close\r\n\r\n",
        )
        .expect("request");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
