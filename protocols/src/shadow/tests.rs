use super::*;

fn info(name: &str) -> ObserverInfo {
    ObserverInfo {
        name: name.into(),
        banner: "visible".into(),
        since_ms: now_ms(),
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Screen { data, .. } | Frame::Output(data) => String::from_utf8_lossy(data).into(),
        Frame::Line(s) | Frame::Notice(s) | Frame::End(s) => s.clone(),
    }
}

async fn next(o: &mut Observer) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), o.next())
        .await
        .expect("a frame in time")
        .expect("stream open")
}

#[tokio::test]
async fn attach_gets_the_screen_then_diffs() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 80, 24);
    t.feed(&Bytes::from_static(b"$ echo before\r\nbefore\r\n$ "));
    let mut o = hub.attach(info("carol")).await.expect("attach");
    let first = next(&mut o).await;
    assert!(
        matches!(
            first,
            Frame::Screen {
                cols: 80,
                rows: 24,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(text(&first).contains("before"), "{first:?}");
    t.feed(&Bytes::from_static(b"whoami\r\nalice\r\n"));
    let f = next(&mut o).await;
    assert!(matches!(f, Frame::Output(_)), "{f:?}");
    assert!(text(&f).contains("alice"), "{f:?}");
    assert!(
        !text(&f).contains("before"),
        "a diff, not the whole screen: {f:?}"
    );
    assert_eq!(hub.observers().len(), 1);
    drop(o);
    assert_eq!(hub.count(), 0);
}

#[tokio::test]
async fn a_stalled_observer_is_resynced_and_never_blocks_feed() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 80, 24);
    let mut stalled = hub.attach(info("slow")).await.expect("attach");
    // Far more frames than its queue holds, while it reads nothing.
    for i in 0..(OBSERVER_QUEUE * 4) {
        t.feed(&Bytes::from(format!("line {i}\r\n")));
        tokio::time::sleep(FRAME_INTERVAL + Duration::from_millis(5)).await;
    }
    t.feed(&Bytes::from_static(b"the last line\r\n"));
    // Drain: somewhere after the queued frames comes a full screen with the latest state.
    let mut saw_screen_with_last = false;
    for _ in 0..(OBSERVER_QUEUE * 2) {
        let f = next(&mut stalled).await;
        if matches!(f, Frame::Screen { .. }) && text(&f).contains("the last line") {
            saw_screen_with_last = true;
            break;
        }
    }
    assert!(saw_screen_with_last, "a resync screen after the stall");
    assert!(stalled.resyncs() >= 1);
}

#[tokio::test]
async fn a_flood_keeps_only_the_tail_and_the_screen_stays_right() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 40, 10);
    for i in 0..100_000 {
        t.feed(&Bytes::from(format!("row {i:06}\r\n")));
    }
    assert!(lock(&t.pending).bytes <= PENDING_CAP + 64);
    let c = t.contents();
    assert!(c.contains("row 099999"), "{c}");
    assert!(!c.contains("row 000001"), "{c}");
}

#[tokio::test]
async fn lines_for_sessions_without_a_terminal_and_the_end() {
    let hub = ShadowHub::new();
    hub.line("SELECT 1".into());
    let mut o = hub.attach(info("carol")).await.expect("attach");
    assert_eq!(next(&mut o).await, Frame::Line("SELECT 1".into()));
    hub.line("SELECT 2".into());
    assert_eq!(next(&mut o).await, Frame::Line("SELECT 2".into()));
    hub.end("terminated");
    assert_eq!(next(&mut o).await, Frame::End("terminated".into()));
    assert!(o.next().await.is_none());
    assert!(hub.attach(info("late")).await.is_err());
}

#[tokio::test]
async fn a_resize_sends_a_full_screen() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 80, 24);
    let mut o = hub.attach(info("carol")).await.expect("attach");
    let _ = next(&mut o).await;
    t.resize(100, 30);
    let f = next(&mut o).await;
    assert!(
        matches!(
            f,
            Frame::Screen {
                cols: 100,
                rows: 30,
                ..
            }
        ),
        "{f:?}"
    );
}
