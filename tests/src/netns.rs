//! A small network of its own for network-access tests (real kernel firewall): a namespace
//! `srv` holding a TCP echo service behind an nftables chain that accepts only addresses in the
//! sets `@allow_<resource>` (IPv4) and `@allow_<resource>_v6`, joined by a veth pair to this
//! namespace, whose end carries two client addresses per family. The gateway manages the sets
//! (its `netns` backend setting names the namespace); the test connects from either address.
//! Needs root (the suite runs as root); everything is deleted when the [`Lab`] drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{assert_success, run};

/// The echo service's port inside the namespace.
pub const PORT: u16 = 7070;

pub struct Lab {
    /// The namespace's name (`ip netns`), for the resource's `netns`.
    pub ns: String,
    host_if: String,
    /// Client addresses on this side: two IPv4, two IPv6.
    pub v4: [IpAddr; 2],
    pub v6: [IpAddr; 2],
    /// The service's addresses.
    pub server_v4: IpAddr,
    pub server_v6: IpAddr,
    service: Option<Child>,
}

fn sh(args: &[&str]) {
    let out = run(
        Command::new(args[0]).args(&args[1..]),
        Duration::from_secs(20),
    );
    assert_success(&out, &args.join(" "));
}

/// Run `nft` inside `ns` with `script` on stdin.
pub fn nft_in(ns: &str, script: &str) -> std::process::Output {
    crate::run_with_input(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        Some(script.as_bytes().to_vec()),
        Duration::from_secs(20),
    )
}

/// The elements of set `set` (table inet wardengate) in `ns`, as `nft` lists them.
pub fn elements(ns: &str, set: &str) -> Vec<String> {
    let out = run(
        Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "nft",
            "-j",
            "list",
            "set",
            "inet",
            "wardengate",
            set,
        ]),
        Duration::from_secs(20),
    );
    assert_success(&out, "nft list set");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft json");
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            if let Some(s) = e.as_str() {
                found.push(s.to_string());
            }
        }
    }
    found
}

impl Lab {
    /// A new namespace with the service running and its chain in place for `resources`.
    pub fn new(resources: &[&str]) -> Lab {
        assert!(
            is_root(),
            "network access tests need root (network namespaces and nftables)"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id().wrapping_mul(7) + N.fetch_add(1, Ordering::Relaxed)) & 0x3fff;
        let (b, c) = (64 + (n >> 8), n & 0xff);
        let ns = format!("wgt{n}");
        let host_if = format!("wgh{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "srv0", "netns", &ns,
        ]);
        let ip = |last: u8| format!("10.{b}.{c}.{last}");
        let ip6 = |last: u8| format!("fd77:{n:x}::{last}");
        for last in [2, 3] {
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", ip(last)),
                "dev",
                &host_if,
            ]);
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/64", ip6(last)),
                "dev",
                &host_if,
                "nodad",
            ]);
        }
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", ip(1)),
            "dev",
            "srv0",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/64", ip6(1)),
            "dev",
            "srv0",
            "nodad",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "srv0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        // The chain is the operator's: accept the allowed sets, refuse the rest at once (a
        // reset, so a cut-off client learns it without waiting). No "ct established accept":
        // removing an address cuts its open connections too.
        let mut rules = String::new();
        let mut sets = String::new();
        for r in resources {
            let set = format!("allow_{}", r.replace(['-', '.'], "_"));
            sets.push_str(&format!(
                "  set {set} {{ type ipv4_addr; }}\n  set {set}_v6 {{ type ipv6_addr; }}\n"
            ));
            rules.push_str(&format!(
                "    tcp dport {PORT} ip saddr @{set} accept\n    tcp dport {PORT} ip6 saddr @{set}_v6 accept\n"
            ));
        }
        let script = format!(
            "table inet wardengate {{\n{sets}  chain input {{\n    type filter hook input priority filter; policy accept;\n{rules}    tcp dport {PORT} reject with tcp reset\n  }}\n}}\n"
        );
        let out = nft_in(&ns, &script);
        assert_success(&out, "nft chain");
        // The service: echo each line back, on IPv4 and IPv6.
        let echo = format!(
            "import socket, threading\n\
             s = socket.socket(socket.AF_INET6)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
             s.bind(('::', {PORT}))\n\
             s.listen(256)\n\
             print('ready', flush=True)\n\
             def serve(c):\n\
             \x20   try:\n\
             \x20       for line in c.makefile('rb'):\n\
             \x20           c.sendall(line)\n\
             \x20   except OSError:\n\
             \x20       pass\n\
             \x20   c.close()\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   threading.Thread(target=serve, args=(c,), daemon=True).start()\n"
        );
        let mut service = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", &echo])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("echo service");
        let mut line = String::new();
        BufReader::new(service.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("service ready");
        assert_eq!(line.trim(), "ready", "the echo service did not start");
        let parse = |s: String| s.parse::<IpAddr>().expect("ip");
        Lab {
            v4: [parse(ip(2)), parse(ip(3))],
            v6: [parse(ip6(2)), parse(ip6(3))],
            server_v4: parse(ip(1)),
            server_v6: parse(ip6(1)),
            ns,
            host_if,
            service: Some(service),
        }
    }

    /// The service's address in `from`'s family.
    pub fn server_for(&self, from: IpAddr) -> SocketAddr {
        match from {
            IpAddr::V4(_) => SocketAddr::new(self.server_v4, PORT),
            IpAddr::V6(_) => SocketAddr::new(self.server_v6, PORT),
        }
    }

    /// Open a connection to the service from `from` and check it echoes; `Err` says how it
    /// failed (refused by the firewall's reset, or silent).
    pub fn reach(&self, from: IpAddr) -> Result<TcpStream, String> {
        let s = connect_from(from, self.server_for(from)).map_err(|e| e.to_string())?;
        echo(&s, "ping")?;
        Ok(s)
    }

    /// The resource's nftables TOML for the gateway: `[[resources]]` in this namespace.
    pub fn resource_toml(&self, name: &str, tags: &str) -> String {
        format!(
            "[[resources]]\nname = \"{name}\"\ntags = {{ {tags} }}\nbackend = \"nftables\"\nnetns = \"{}\"\n\n",
            self.ns
        )
    }
}

/// One line through an open connection, echoed back within a few seconds.
pub fn echo(s: &TcpStream, text: &str) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut w = s;
    w.write_all(format!("{text}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let n = BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the connection was closed".into());
    }
    match line.trim() == text {
        true => Ok(()),
        false => Err(format!("unexpected answer {line:?}")),
    }
}

/// A TCP connection from local address `from` to `to` (3 s to connect).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sock = match from {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        sock.bind(SocketAddr::new(from, 0))?;
        let s = tokio::time::timeout(Duration::from_secs(3), sock.connect(to))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        Ok(s)
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.service.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
