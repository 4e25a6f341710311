//! Idle time counts only meaningful input: keepalives and window changes never reset it.

use std::time::Duration;

use wardengate_tests::russh_client;
use wardengate_tests::*;

#[test]
fn keepalives_and_window_changes_are_not_input_but_keystrokes_are() {
    let (env, _sshd, gw) = standard();
    // Multi-thread: the russh client session must keep running between block_on calls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let key = russh_client::load_key(&env.alice_key).expect("key");
    let port = gw.ssh_port;
    let (h, ch) = rt.block_on(async {
        let h = russh_client::connect(port, "alice:web-01.test", key)
            .await
            .expect("connect");
        let ch = h.channel_open_session().await.expect("channel");
        ch.request_pty(true, "vt100", 80, 24, 0, 0, &[])
            .await
            .expect("pty");
        ch.exec(true, "cat > /dev/null").await.expect("exec");
        (h, ch)
    });
    let id = gw.wait_one_active();
    rt.block_on(async {
        for i in 0..5u32 {
            ch.window_change(100 + i, 40, 0, 0).await.expect("resize");
            h.send_keepalive(true).await.expect("keepalive");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert!(
        s["last_input_at"].is_null(),
        "keepalives/resizes counted as input: {s}"
    );
    assert!(s["idle_secs"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(s["pty"]["cols"], 104, "resizes are tracked: {s}");
    assert_eq!(s["pty"]["term"], "vt100");
    rt.block_on(async { ch.data_bytes(b"typed\n".to_vec()).await.expect("type") });
    let s = gw.wait_sessions("?state=active", Duration::from_secs(5), |s| {
        s.first().is_some_and(|s| s["last_input_at"].is_string())
    });
    assert!(
        s[0]["last_input_at"].is_string(),
        "keystrokes must count: {:?}",
        s
    );
    assert_eq!(s[0]["idle_secs"], 0);
    assert_eq!(s[0]["channels"], 1);
    drop(ch);
    drop(h);
}
