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
        Frame::Desktop { .. } => "(a desktop picture)".into(),
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
    assert!(t.pending_bytes() <= PENDING_CAP + 64);
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

/// Apply frames as a terminal would.
fn render(frames: &[Frame], rows: u16, cols: u16) -> String {
    let mut p = vt100::Parser::new(
        std::num::NonZeroU16::new(rows).expect("rows"),
        std::num::NonZeroU16::new(cols).expect("cols"),
        0,
    );
    for f in frames {
        if let Frame::Screen { data, .. } | Frame::Output(data) = f {
            p.process(data);
        }
    }
    p.screen().contents()
}

async fn drain(o: &mut Observer, into: &mut Vec<Frame>) {
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(300), o.next()).await {
        into.push(f);
    }
}

#[tokio::test]
async fn every_observer_renders_the_same_screen_when_others_attach_mid_stream() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 40, 10);
    let mut a = hub.attach(info("a")).await.expect("attach a");
    let mut seen_a = Vec::new();
    t.feed(&Bytes::from_static(b"first\r\n"));
    drain(&mut a, &mut seen_a).await;
    // Output that no frame carried yet, then a second observer.
    t.feed(&Bytes::from_static(b"second\r\n"));
    let mut b = hub.attach(info("b")).await.expect("attach b");
    t.feed(&Bytes::from_static(b"third\r\n"));
    let mut seen_b = Vec::new();
    drain(&mut a, &mut seen_a).await;
    drain(&mut b, &mut seen_b).await;
    let truth = t.contents();
    assert!(
        truth.contains("second") && truth.contains("third"),
        "{truth}"
    );
    assert_eq!(render(&seen_a, 10, 40), truth, "observer a");
    assert_eq!(render(&seen_b, 10, 40), truth, "observer b");
}

#[tokio::test]
async fn modes_survive_a_flood_nobody_watched() {
    let hub = ShadowHub::new();
    let t = hub.terminal(0, 40, 10);
    // A full-screen application starts (alternate screen, application cursor keys), then prints
    // far more than is kept.
    t.feed(&Bytes::from_static(b"\x1b[?1049h\x1b[?1h\x1b[2;9r"));
    for i in 0..40_000 {
        t.feed(&Bytes::from(format!(
            "frame {i:06} of a busy full-screen app\r\n"
        )));
    }
    let screen = t.with_screen(|p| {
        let s = p.screen();
        (s.alternate_screen(), s.application_cursor(), s.contents())
    });
    assert!(screen.0, "still on the alternate screen");
    assert!(screen.1, "application cursor keys still on");
    assert!(screen.2.contains("frame 039999"), "{}", screen.2);
}

#[test]
fn keep_modes_takes_only_mode_sequences() {
    let mut m = Vec::new();
    keep_modes(
        b"ab\x1b[?25lxx\x1b[31mred\x1b[1;20r\x1b=\x1b[?2004h\x1b[?",
        &mut m,
    );
    assert_eq!(m, b"\x1b[?25l\x1b[1;20r\x1b=\x1b[?2004h");
    let mut big = Vec::new();
    for _ in 0..2000 {
        keep_modes(b"\x1b[?1049h\x1b[?1049l", &mut big);
    }
    assert!(
        big.len() <= MODES_CAP && big.starts_with(b"\x1b["),
        "{}",
        big.len()
    );
}
