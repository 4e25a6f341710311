//! RDP through the gateway with real peers: FreeRDP's `xfreerdp` as the client (on an Xvfb
//! display of its own) and FreeRDP's shadow server sharing another Xvfb desktop as the target,
//! NLA required on both legs. The person logs in to the gateway as `alice:TARGET` with their own
//! password; the gateway logs in to the target with the account's password from the vault.

use std::process::Child;
use std::time::{Duration, Instant};

use wardengate_tests::browser::{Chromium, PAGE_STATUS};
use wardengate_tests::rdp::*;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

fn desktop(env: &TestEnv) -> Desktop {
    Desktop::start(&env.path("desktop"), 0, "bob", BOB_PASSWORD).expect("the RDP target desktop")
}

/// A gateway with `desk` as the RDP target win-dc01.test (account bob, password in the vault).
fn rdp_gateway<'a>(env: &'a TestEnv, desk: &Desktop) -> GatewayBuilder<'a> {
    env.gateway()
        .rdp_target("win-dc01.test", &desk.address(), "bob", BOB_PASSWORD)
}

struct Client(Child);

/// Where xfreerdp writes what it tells the person (`xfreerdp.log` in the test's directory).
fn client_log(env: &TestEnv) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.path("xfreerdp.log"))
        .expect("xfreerdp.log")
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// alice's xfreerdp on a 1024x768 display of its own, logged in to win-dc01.test through the
/// gateway (telling `xfreerdp.log` what it tells the person): the display, the client, and
/// the session's id once it is active.
fn alice_connects(env: &TestEnv, gw: &GatewayProc) -> (Xvfb, Client, String) {
    let port = gw.rdp_port.expect("the RDP front is on");
    let screen = Xvfb::start(1024, 768).expect("the client's display");
    let child = xfreerdp(&screen, port, "alice:win-dc01.test", ALICE_PASSWORD)
        .stdout(client_log(env))
        .stderr(client_log(env))
        .spawn()
        .expect("xfreerdp");
    let client = Client(child);
    let id = gw.wait_one_active();
    (screen, client, id)
}

/// Wait until the client's display shows the target's red logo; the number of red pixels.
fn wait_for_desktop(display: &Xvfb) -> usize {
    let deadline = Instant::now() + T;
    loop {
        let (_, _, rgb) = screenshot(display);
        let red = red_pixels(&rgb);
        if red > 50_000 || Instant::now() > deadline {
            return red;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The one-time link wgctl printed.
fn link_in(out: &std::process::Output) -> String {
    text(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(String::from)
        .unwrap_or_else(|| panic!("a link in {}", text(&out.stdout)))
}

/// Pixels of the gateway's banner amber in the top 32 rows of a `width`-wide screenshot.
fn banner_pixels(rgb: &[u8], width: usize) -> usize {
    rgb[..width * 32 * 3]
        .chunks_exact(3)
        .filter(|p| *p == [0xf0, 0xb4, 0x29])
        .count()
}

/// An auditor plays the recording in a browser: the terminal player points there; the page
/// plays it to the end (at 4x) and shows the desktop as it was last.
fn replay_in_a_browser(env: &TestEnv, gw: &GatewayProc, id: &str, on_target: usize) {
    let out = run(gw.wgctl().args(["recording", "play", id]), T);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("--browser"), "{err}");
    let out = run(
        gw.wgctl()
            .args(["recording", "play", id, "--browser", "--speed", "4"]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = link_in(&out);
    assert!(url.contains(&format!("/replay/{id}#ticket=")), "{url}");
    // The same link as JSON, for scripts (a second, unused ticket).
    let json = run(
        gw.wgctl()
            .args(["-o", "json", "recording", "play", id, "--browser"]),
        T,
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("-o json");
    assert!(
        v["url"].as_str().is_some_and(|u| u.contains("#ticket=")) && v["expires_in_secs"] == 60,
        "{v}"
    );
    let profile = env.path("chromium-replay");
    let mut browser = Chromium::open(&url, &profile);
    let v = browser.eval_until(PAGE_STATUS, T, |v| !v["end"].is_null());
    assert_eq!(
        v["end"].as_str(),
        Some("end of the recording"),
        "{v}\nchromium: {}",
        Chromium::log(&profile)
    );
    assert!(
        v["position"].is_string() && v["position"] == v["duration"],
        "played to the end: {v}"
    );
    // To look at the page: WARDENGATE_SCREENSHOTS=DIR keeps a picture of it.
    if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("desktop-replay.png"),
            browser.screenshot(),
        );
    }
    let (w, h, rgb) = parse_png(&browser.canvas_png("#desktop"));
    let red = red_pixels(&rgb) * 4;
    assert_eq!((w, h), (512, 384));
    assert!(
        red.abs_diff(on_target) * 100 <= on_target * 5,
        "the replay ends on {red} red pixels (scaled up), the target showed {on_target}"
    );
    let accessed = gw.audit("recording.accessed");
    assert!(
        accessed
            .iter()
            .any(|a| a["detail"]["what"] == "replay" && a["actor"] == "admin"),
        "{accessed:?}"
    );
}

/// An operator watches the desktop in a browser: headless Chromium opens the one-time link that
/// `wgctl session shadow --browser` prints, and its canvas shows what the target's screen shows.
fn watch_in_a_browser(env: &TestEnv, gw: &GatewayProc, desk: &Desktop, client: &Xvfb, id: &str) {
    // A desktop is not a terminal: the terminal shadow says where to look instead.
    let out = run(gw.wgctl().args(["session", "shadow", id]), T);
    assert!(
        !out.status.success() && text(&out.stderr).contains("--browser"),
        "{}",
        text(&out.stderr)
    );
    let out = run(gw.wgctl().args(["session", "shadow", id, "--browser"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = link_in(&out);
    assert!(url.contains(&format!("/shadow/{id}#ticket=")), "{url}");

    let (_, _, target_rgb) = screenshot(&desk.xvfb);
    let on_target = red_pixels(&target_rgb);
    let profile = env.path("chromium");
    let mut browser = Chromium::open(&url, &profile);
    let v = browser.eval_until(PAGE_STATUS, T, |v| v["whole"].as_u64().unwrap_or(0) > 0);
    assert!(
        v["whole"].as_u64().unwrap_or(0) > 0,
        "the page shows the desktop: {v}\nchromium: {}",
        Chromium::log(&profile)
    );
    assert_eq!(
        (&v["size"], v["observer"].as_str()),
        (&serde_json::json!([1024, 768]), Some("admin")),
        "{v}"
    );
    // The canvas holds the desktop at half size, with a quarter of the target screen's red.
    let deadline = Instant::now() + T;
    // (Within 5 %: shrinking blends the logo's edges.)
    let (size, red) = loop {
        let (w, h, rgb) = parse_png(&browser.canvas_png("#desktop"));
        let red = red_pixels(&rgb) * 4;
        if red.abs_diff(on_target) * 100 <= on_target * 5 || Instant::now() > deadline {
            break ((w, h), red);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(size, (512, 384), "the canvas is the desktop shrunk by 2");
    assert!(
        on_target > 50_000 && red.abs_diff(on_target) * 100 <= on_target * 5,
        "the browser shows {red} red pixels (scaled up), the target's screen {on_target}"
    );
    // And the window shows that canvas (at its own size: it fits): a screenshot of the page has
    // the same red as the canvas, next to the page's header.
    let shot = browser.screenshot();
    let (_, _, shot) = parse_png(&shot);
    let shown = red_pixels(&shot) * 4;
    assert!(
        shown.abs_diff(red) * 100 <= red * 2,
        "the page's screenshot has {shown} red pixels (scaled up), its canvas {red}"
    );
    // Attaching is audited with the operator's name, and the session lists its observer.
    let attach = gw.wait_audit("session.shadow.attach", T);
    assert_eq!(
        (attach["actor"].as_str(), attach["session_id"].as_str()),
        (Some("admin"), Some(id)),
        "{attach}"
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["observers"][0]["name"], "admin", "{s}");
    // The policy says `visible`: the person at the desktop sees who watches, drawn across the
    // top of their screen.
    let deadline = Instant::now() + T;
    let shown = loop {
        let (w, _, rgb) = screenshot(client);
        let n = banner_pixels(&rgb, w);
        if n > 10_000 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        shown > 10_000,
        "the watched user sees the banner ({shown} amber pixels)"
    );

    // The link works once: loaded again, the page cannot attach and says what to do.
    browser.navigate(&url);
    let v = browser.eval_until(PAGE_STATUS, T, |v| !v["end"].is_null());
    let state = v["state"].as_str().unwrap_or_default();
    assert!(
        state.contains("could not attach") && state.contains("--browser"),
        "{v}"
    );
    // The page left: the operator is detached (audited), and nobody watches any more.
    drop(browser);
    let detach = gw.wait_audit("session.shadow.detach", T);
    assert_eq!(detach["actor"], "admin", "{detach}");
    let watched = gw.wait_sessions("?shadowed=true", T, |s| s.is_empty());
    assert!(watched.is_empty(), "{watched:?}");
}

#[test]
fn xfreerdp_sees_the_target_desktop_with_the_injected_password_then_is_terminated() {
    let env = TestEnv::new();
    let desk = desktop(&env);
    let gw = rdp_gateway(&env, &desk).start();
    let (screen, mut client, id) = alice_connects(&env, &gw);
    // The target's desktop (a 400x300 red logo) is on the client's screen.
    let red = wait_for_desktop(&screen);
    assert!(
        red > 50_000,
        "the client shows the desktop ({red} red pixels)"
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(
        (
            s["protocol"].as_str(),
            s["actor"].as_str(),
            s["target"].as_str(),
            s["account"].as_str()
        ),
        (
            Some("rdp"),
            Some("alice"),
            Some("win-dc01.test"),
            Some("bob")
        ),
        "{s}"
    );
    // The relay measures what it adds to the target's data on its way to the client.
    assert!(
        s["relay_latency"]["samples"].as_u64().unwrap_or(0) > 0
            && s["relay_latency"]["p99_us"].as_u64() <= s["relay_latency"]["max_us"].as_u64(),
        "{s}"
    );
    let show = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&show, "rdp");
    assert_stdout_has(&show, "relay latency");

    watch_in_a_browser(&env, &gw, &desk, &screen, &id);

    // Terminated by an operator: the client is disconnected, the session closed with the reason.
    let out = gw.terminate(&id, "maintenance window");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // xfreerdp is told why, in RDP's terms (Set Error Info), says so and exits with its code for
    // a disconnect by the server (2), not a connection error.
    let status =
        wait_timeout(&mut client.0, T).expect("xfreerdp left after the session was terminated");
    let said = std::fs::read_to_string(env.path("xfreerdp.log")).unwrap_or_default();
    assert!(said.contains("ERRINFO_RPC_INITIATED_DISCONNECT"), "{said}");
    assert_eq!(status.code(), Some(2), "{said}");
    gw.last_closed_with("terminated", "maintenance window");

    // The recording holds the session both ways (timestamped PDUs) and never the account's
    // password: the client's stream after NLA is all the client ever received.
    gw.wait_sealed(&id);
    let rec = wardengate_recorder::read(&gw.data.join("recordings").join(&id)).expect("recording");
    let (mut up, mut down) = (0usize, 0usize);
    let mut all = Vec::new();
    for e in &rec.events {
        match &e.kind {
            wardengate_recorder::EventKind::Input { data, .. } => {
                up += data.len();
                all.extend_from_slice(data);
            }
            wardengate_recorder::EventKind::Output { data, .. } => {
                down += data.len();
                all.extend_from_slice(data);
            }
            _ => {}
        }
    }
    assert!(
        up > 1000 && down > 10_000,
        "recorded {up} bytes up, {down} down"
    );
    let utf16: Vec<u8> = BOB_PASSWORD
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    for needle in [BOB_PASSWORD.as_bytes(), &utf16] {
        assert!(
            !all.windows(needle.len()).any(|w| w == needle),
            "the account's password is in what the client received"
        );
    }
    // The recording replays to what the target's desktop showed: the frame at the end (an
    // offset past the end gives the last one) has the target's red logo, pixel for pixel.
    let (_, _, target_rgb) = screenshot(&desk.xvfb);
    let on_target = red_pixels(&target_rgb);
    let png_file = env.path("end.png");
    let png_path = png_file.to_str().expect("utf-8 path");
    // `wgctl recording export` of the frame at offset `at` as a PNG into `png_file`.
    let export_png_at = |at: &str| {
        run(
            gw.wgctl().args([
                "recording",
                "export",
                &id,
                "--format",
                "png",
                "--at",
                at,
                "--file",
                png_path,
            ]),
            T,
        )
    };
    let out = export_png_at("1h");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (w, h, rgb) = parse_png(&std::fs::read(&png_file).expect("the exported PNG"));
    assert_eq!(
        (w, h),
        (1024, 768),
        "the frame has the target desktop's size"
    );
    let replayed = red_pixels(&rgb);
    assert!(
        on_target > 50_000 && replayed.abs_diff(on_target) * 100 <= on_target,
        "replayed frame: {replayed} red pixels, the target's screen: {on_target}"
    );
    // Before the desktop was drawn there is nothing to show, and wgctl says when it appears.
    let out = export_png_at("0s");
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not on screen yet at 00:00:00.000"),
        "{err}"
    );
    // A directory of frames, the last of which is the desktop.
    let frames = env.path("frames");
    let out = run(
        gw.wgctl()
            .args(["recording", "export", &id, "--format", "frames"])
            .arg(&frames),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<_> = std::fs::read_dir(&frames)
        .expect("the frames directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let last = names.last().expect("at least one frame");
    assert!(text(&out.stdout).contains(&format!("wrote {} frame(s)", names.len())));
    let (_, _, rgb) = parse_png(&std::fs::read(last).expect("a frame"));
    assert!(
        red_pixels(&rgb).abs_diff(on_target) * 100 <= on_target,
        "{}",
        last.display()
    );
    replay_in_a_browser(&env, &gw, &id, on_target);

    // The recording says what the gateway withdrew from the client's offer.
    assert!(
        rec.events.iter().any(|e| matches!(&e.kind,
            wardengate_recorder::EventKind::Marker { kind, .. } if kind == "rdp-offer")),
        "an rdp-offer marker"
    );

    // The gateway logs at DEBUG in tests; CredSSP's library would print the password it wraps.
    secrets::assert_secret_absent(&gw.log(), BOB_PASSWORD, "the gateway's log");
}

#[test]
fn nla_refuses_a_wrong_password_and_a_login_without_a_target() {
    let env = TestEnv::new();
    let desk = desktop(&env);
    let gw = rdp_gateway(&env, &desk).start();
    let port = gw.rdp_port.expect("the RDP front is on");
    let screen = Xvfb::start(640, 480).expect("the client's display");
    let auth_only = |user: &str, password: &str| {
        let out = run(xfreerdp(&screen, port, user, password).arg("+auth-only"), T);
        out.status.code()
    };
    assert_eq!(auth_only("alice:win-dc01.test", ALICE_PASSWORD), Some(0));
    assert_ne!(
        auth_only("alice:win-dc01.test", "not her password"),
        Some(0)
    );
    let failed = gw.wait_audit("auth.failed", T);
    assert_eq!(failed["detail"]["reason"], "bad_password", "{failed}");
    // The vault's password is the account's, not the person's: it does not log in to the gateway.
    assert_ne!(auth_only("alice:win-dc01.test", BOB_PASSWORD), Some(0));
    assert_ne!(auth_only("alice", ALICE_PASSWORD), Some(0));
    let deadline = Instant::now() + T;
    while !gw
        .audit("auth.failed")
        .iter()
        .any(|e| e["detail"]["reason"] == "bad_login")
    {
        assert!(Instant::now() < deadline, "{:?}", gw.audit("auth.failed"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A target the policy does not grant: NLA succeeds, admission refuses and is audited, and
    // the client is told in RDP's terms (the reason itself is in the audit log).
    let out = run(
        &mut xfreerdp(&screen, port, "alice:nowhere.test", ALICE_PASSWORD),
        T,
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES"),
        "xfreerdp says why: {said}"
    );
    let denied = gw.wait_audit("session.denied", T);
    assert_eq!(denied["detail"]["target"], "nowhere.test", "{denied}");
}

#[test]
fn an_untouched_desktop_is_closed_for_idleness() {
    let env = TestEnv::new();
    let desk = desktop(&env);
    let gw = rdp_gateway(&env, &desk)
        .policies(
            "\n[[policies]]\nname = \"idle-rdp\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\
             idle_timeout = \"4s\"\nidle_grace = \"3s\"\n",
        )
        .start();
    let (screen, mut client, id) = alice_connects(&env, &gw);
    // The desktop keeps updating and the client keeps acknowledging frames and moving nothing:
    // none of that is input, so the session is closed for idleness.
    // First the warning, drawn across the top of the client's screen (amber, as the gateway
    // draws its banners), while the grace runs.
    let deadline = Instant::now() + T;
    let warned = loop {
        let (w, _, rgb) = screenshot(&screen);
        let n = banner_pixels(&rgb, w);
        if n > 10_000 || Instant::now() > deadline || matches!(client.0.try_wait(), Ok(Some(_))) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        warned > 10_000,
        "the idle warning is drawn on the client's screen ({warned} amber pixels)"
    );
    // Told why: xfreerdp names the idle timeout and exits with its code for it (3).
    let status = wait_timeout(&mut client.0, T).expect("xfreerdp was disconnected");
    let said = std::fs::read_to_string(env.path("xfreerdp.log")).unwrap_or_default();
    assert!(said.contains("ERRINFO_IDLE_TIMEOUT"), "{said}");
    assert_eq!(status.code(), Some(3), "{said}");
    let s = gw.last_closed();
    assert_eq!(s["id"].as_str(), Some(id.as_str()), "{s}");
    assert_eq!(s["end_reason"].as_str(), Some("idle"), "{s}");
    gw.wait_audit("session.idle_warning", T);
}
