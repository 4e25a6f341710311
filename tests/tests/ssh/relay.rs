//! The SSH data path through a real gateway to a real sshd, driven by real OpenSSH clients.

use std::process::Command;
use std::time::Duration;

use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn exec_relays_stdout_stderr_and_exit_status() {
    let (env, sshd, gw) = standard();
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .arg("echo out-$((40+2)); echo err-line >&2; exit 7"),
        T,
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out-42\n");
    assert_stderr_has(&out, "err-line");
    // The target account is the sshd's user, whose key only the vault holds.
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("id -un"), T);
    assert_eq!(text(&out.stdout).trim(), sshd.user);
}

#[test]
fn exit_signal_is_relayed() {
    let (env, _sshd, gw) = standard();
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .arg("-v")
            .arg("kill -TERM $$"),
        T,
    );
    // OpenSSH exits 255 on a remote signal; its debug log shows the exit-signal request arrived
    // (exactly as with a direct connection to the sshd).
    assert_eq!(out.status.code(), Some(255));
    assert_stderr_has(&out, "rtype exit-signal");
}

#[test]
fn interactive_shell_through_pty_with_env_and_resize_state() {
    let (env, _sshd, gw) = standard();
    let mut cmd = gw.ssh(&env, "alice:web-01.test");
    cmd.arg("-tt")
        .env("TERM", "xterm-256color")
        .env("WG_MARK", "from-client")
        .args(["-o", "SendEnv=WG_MARK"]);
    let script = b"tty; echo term=$TERM; echo mark=$WG_MARK; echo sum=$((6*7)); exit 3\n".to_vec();
    let out = run_with_input(&mut cmd, Some(script), T);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{o}");
    assert!(o.contains("/dev/pts/"), "no pty: {o}");
    assert!(o.contains("term=xterm-256color"), "{o}");
    assert!(o.contains("mark=from-client"), "env not relayed: {o}");
    assert!(o.contains("sum=42"), "{o}");
    let s = &gw.last_closed();
    assert_eq!(s["pty"]["term"], "xterm-256color");
    assert!(
        s["last_input_at"].is_string(),
        "typed input must count as meaningful: {s}"
    );
    assert_eq!(s["end_reason"], "client_exit");
}

#[test]
fn keystrokes_sent_before_the_target_is_ready_are_not_lost() {
    // The target leg takes 1.5 s to come up; the client types at once.
    let (env, _sshd, gw) = slow_target(Duration::from_millis(1500));
    let mut cmd = gw.ssh(&env, "alice:slow.test");
    cmd.arg("-tt");
    let out = run_with_input(&mut cmd, Some(b"echo early-$((1+1))\nexit 0\n".to_vec()), T);
    assert_stdout_has(&out, "early-2");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sixty_four_mib_both_ways_checksummed() {
    let (env, _sshd, gw) = standard();
    let data = pseudo_random(64 << 20, 7);
    let want = sha256_hex(&data);
    let remote = env.path("remote.bin");
    let up = run_with_input(
        gw.ssh(&env, "alice:web-01.test").arg(format!(
            "cat > {} && sha256sum {}",
            remote.display(),
            remote.display()
        )),
        Some(data),
        T,
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(
        text(&up.stdout).starts_with(&want),
        "upload corrupted: {}",
        text(&up.stdout)
    );
    let down = run(
        gw.ssh(&env, "alice:web-01.test")
            .arg(format!("cat {}", remote.display())),
        T,
    );
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(down.stdout.len(), 64 << 20);
    assert_eq!(sha256_hex(&down.stdout), want, "download corrupted");
    let s = &gw.last_closed();
    assert!(s["bytes_out"].as_u64().unwrap_or(0) >= 64 << 20, "{s}");
}

#[test]
fn echo_through_cat_saturates_both_directions_at_once() {
    // Regression: with both directions saturated on one channel, the two russh session loops
    // once waited on each other for window adjustments (see relay.rs).
    let (env, _sshd, gw) = standard();
    let data = pseudo_random(64 << 20, 3);
    let want = sha256_hex(&data);
    let out = run_with_input(gw.ssh(&env, "alice:web-01.test").arg("cat"), Some(data), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 64 << 20);
    assert_eq!(sha256_hex(&out.stdout), want);
}

#[test]
fn scp_sftp_and_rsync_work_with_the_hash_login_form() {
    let (env, _sshd, gw) = standard();
    let src = env.path("src.bin");
    let data = pseudo_random(3 << 20, 11);
    std::fs::write(&src, &data).expect("write");
    let want = sha256_hex(&data);
    let dest = |n: &str| format!("alice#web-01.test@127.0.0.1:{}", env.path(n).display());
    let port = gw.ssh_port.to_string();
    // `tool` succeeded and the file `copy` it wrote holds the data.
    let assert_copied = |tool: &str, out: &std::process::Output, copy: &str| {
        assert!(out.status.success(), "{tool}: {}", text(&out.stderr));
        let copied = std::fs::read(env.path(copy)).unwrap_or_else(|e| panic!("{tool} copy: {e}"));
        assert_eq!(sha256_hex(&copied), want);
    };

    let out = run(
        Command::new("scp")
            .arg("-q")
            .args(gw.ssh_opts(&env))
            .args(["-P", &port])
            .arg(&src)
            .arg(dest("scp.bin")),
        T,
    );
    assert_copied("scp", &out, "scp.bin");

    let batch = format!(
        "put {} {}\nget {} {}\n",
        src.display(),
        env.path("sftp.bin").display(),
        env.path("sftp.bin").display(),
        env.path("sftp-back.bin").display()
    );
    let mut sftp = Command::new("sftp");
    sftp.arg("-q")
        .args(gw.ssh_opts(&env))
        .args(["-P", &port])
        .arg("alice#web-01.test@127.0.0.1");
    let out = run_with_input(&mut sftp, Some(batch.into_bytes()), T);
    assert_copied("sftp", &out, "sftp-back.bin");

    let e = format!("ssh {} -p {port}", gw.ssh_opts(&env).join(" "));
    let out = run(
        Command::new("rsync")
            .args(["-a", "-e", &e])
            .arg(&src)
            .arg(dest("rsync.bin")),
        T,
    );
    assert_copied("rsync", &out, "rsync.bin");
}

#[test]
fn local_port_forwarding_when_the_policy_allows_it() {
    let echo = echo_server();
    let (env, _sshd, gw) = standard();
    let local = wardengate_dev::sshd::free_port().expect("port");
    let mut fwd = gw.ssh(&env, "alice:web-01.test");
    fwd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("{local}:127.0.0.1:{echo}"),
    ]);
    let mut child = fwd.spawn().expect("ssh -L");
    let mut conn = None;
    for _ in 0..200 {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            conn = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut conn = conn.expect("forwarded port never opened");
    use std::io::{Read, Write};
    conn.write_all(b"ping through the tunnel").expect("write");
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut back = String::new();
    conn.read_to_string(&mut back).expect("read");
    assert_eq!(back, "ping through the tunnel");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn port_forwarding_is_refused_when_the_policy_does_not_allow_it() {
    let (env, _sshd, gw) =
        standard_with(|gw| gw.policies("[[policies]]\nname = \"no-fwd\"\ngroups = [\"sre\"]\n"));
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .args(["-W", "127.0.0.1:9", "-o", "LogLevel=INFO"]),
        T,
    );
    assert!(!out.status.success());
    assert_stderr_has(&out, "port forwarding is not allowed by policy 'no-fwd'");
}

#[test]
fn concurrent_sessions_are_independent() {
    let (env, _sshd, gw) = standard();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let mut c = gw.ssh(&env, "alice:web-01.test");
            c.arg(format!("sleep 1; echo session-{i}"));
            std::thread::spawn(move || run(&mut c, T))
        })
        .collect();
    let live = gw.wait_sessions("?actor=alice&state=active", Duration::from_secs(20), |s| {
        s.len() == 8
    });
    assert_eq!(live.len(), 8, "expected 8 live sessions at once");
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().expect("thread");
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }
    let closed = gw.wait_sessions("?state=closed", T, |s| s.len() == 8);
    let mut ids: Vec<String> = closed
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
}

#[test]
fn several_channels_on_one_connection() {
    let (env, _sshd, gw) = standard();
    // A ControlMaster multiplexes several sessions over one SSH connection.
    let ctl = env.path("ctl");
    let master_opts = ["-o", "ControlMaster=yes", "-o"];
    let mut master = gw.ssh(&env, "alice:web-01.test");
    master
        .args(master_opts)
        .arg(format!("ControlPath={}", ctl.display()))
        .arg("-N");
    let mut m = master.spawn().expect("master");
    for _ in 0..200 {
        if ctl.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let outs: Vec<_> = (0..3)
        .map(|i| {
            let mut c = gw.ssh(&env, "alice:web-01.test");
            c.args(["-o", "ControlMaster=no", "-o"])
                .arg(format!("ControlPath={}", ctl.display()))
                .arg(format!("echo chan-{i}"));
            std::thread::spawn(move || run(&mut c, T))
        })
        .collect();
    for (i, h) in outs.into_iter().enumerate() {
        assert_eq!(
            text(&h.join().expect("thread").stdout),
            format!("chan-{i}\n")
        );
    }
    assert_eq!(
        gw.sessions("?state=active").len(),
        1,
        "all channels share one session"
    );
    let _ = m.kill();
    let _ = m.wait();
}

/// Which cipher each leg negotiated is on the session (and in `session.start`): by default a
/// stock OpenSSH client gets AES-GCM (the gateway offers AEAD only; OpenSSH would pick CTR or
/// chacha20 first if they were on offer); widened with `ssh.ciphers`, a client that asks for a
/// CTR cipher gets it with its MAC.
#[test]
fn each_leg_shows_the_cipher_it_negotiated() {
    let (env, _sshd, gw) = standard();
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = gw.last_closed();
    assert_eq!(s["client_crypto"], "aes128-gcm@openssh.com", "{s}");
    assert_eq!(s["target_crypto"], "aes256-gcm@openssh.com", "{s}");
    let id = s["id"].as_str().expect("id");
    let show = text(&run(gw.wgctl().args(["session", "show", id]), T).stdout);
    assert!(
        show.contains(
            "ciphers:      client aes128-gcm@openssh.com / target aes256-gcm@openssh.com"
        ),
        "{show}"
    );
    let start = gw.wait_audit("session.start", T);
    assert_eq!(
        start["detail"]["client_crypto"], "aes128-gcm@openssh.com",
        "{start}"
    );

    let (env, _sshd, gw) = standard_with(|gw| {
        gw.ssh_lines(
            "ciphers = [\"aes256-gcm@openssh.com\", \"aes128-gcm@openssh.com\", \"aes128-ctr\"]",
        )
    });
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .args(["-c", "aes128-ctr", "-m", "hmac-sha2-256-etm@openssh.com"])
            .arg("true"),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = gw.last_closed();
    assert_eq!(
        s["client_crypto"], "aes128-ctr + hmac-sha2-256-etm@openssh.com",
        "{s}"
    );
}
