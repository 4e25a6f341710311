//! Channel requests the OpenSSH CLI cannot send on demand, driven with a russh client: a window
//! change reaches the target's pty, a signal reaches the target's process.

use std::time::Duration;

use russh::ChannelMsg;
use wardengate_tests::russh_client;
use wardengate_tests::*;

fn runtime() -> tokio::runtime::Runtime {
    // Multi-thread: the russh client session must keep running between block_on calls.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Read channel output until `needle` appears (or the channel ends / 20 s pass).
async fn read_until(
    ch: &mut russh::Channel<russh::client::Msg>,
    needle: &str,
) -> (String, Vec<ChannelMsg>) {
    let mut text = String::new();
    let mut other = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !text.contains(needle) {
        match tokio::time::timeout_at(deadline, ch.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => text.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(m)) => {
                let end = matches!(m, ChannelMsg::Close);
                other.push(m);
                if end {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    (text, other)
}

/// alice's russh connection to web-01.test through the gateway, and a session channel on it
/// (keep the connection: dropping it ends the channel).
async fn alice_session_channel(
    env: &TestEnv,
    gw: &GatewayProc,
) -> (
    russh::client::Handle<russh_client::AcceptAnyHostKey>,
    russh::Channel<russh::client::Msg>,
) {
    let key = russh_client::load_key(&env.alice_key).expect("key");
    let h = russh_client::connect(gw.ssh_port, "alice:web-01.test", key)
        .await
        .expect("connect");
    let ch = h.channel_open_session().await.expect("channel");
    (h, ch)
}

#[test]
fn window_change_reaches_the_target_pty() {
    let (env, _sshd, gw) = standard();
    runtime().block_on(async {
        let (_connection, mut ch) = alice_session_channel(&env, &gw).await;
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .expect("pty");
        ch.request_shell(true).await.expect("shell");
        ch.data_bytes(b"stty size; echo first-$((1+1))\n".to_vec())
            .await
            .expect("type");
        let (out, _) = read_until(&mut ch, "first-2").await;
        assert!(out.contains("24 80"), "initial size: {out:?}");
        ch.window_change(132, 43, 0, 0).await.expect("resize");
        ch.data_bytes(b"stty size; echo second-$((1+1))\n".to_vec())
            .await
            .expect("type");
        let (out, _) = read_until(&mut ch, "second-2").await;
        assert!(out.contains("43 132"), "resized: {out:?}");
    });
}

#[test]
fn signal_request_reaches_the_target_sshd() {
    // OpenSSH's sshd refuses to deliver `signal` requests in this setup, even on a direct
    // connection ("session signalling requires privilege separation"), so what is checked is
    // that the request crossed the gateway: sshd logs its refusal.
    let (env, sshd, gw) = standard();
    // Kept until the end: its tasks carry the connection while the signal goes out.
    let rt = runtime();
    rt.block_on(async {
        let (_connection, mut ch) = alice_session_channel(&env, &gw).await;
        ch.exec(true, "echo started; exec sleep 30")
            .await
            .expect("exec");
        let (out, _) = read_until(&mut ch, "started").await;
        assert!(out.contains("started"));
        ch.signal(russh::Sig::TERM).await.expect("signal");
    });
    let log = sshd.dir.join("sshd.log");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = std::fs::read_to_string(&log).unwrap_or_default();
        if seen.contains("session_signal_req") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.contains("session_signal_req"),
        "the signal request never reached sshd: {seen}"
    );
}
