//! A desktop (RDP) session on one gateway watched in a browser through another: the link and the
//! page are the asking gateway's, the observer is attached (and audited) by the gateway that runs
//! the session, and the pictures are relayed.

use std::time::Duration;

use wardengate_tests::browser::{Chromium, PAGE_STATUS};
use wardengate_tests::rdp::*;
use wardengate_tests::*;

use crate::cluster_with;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_desktop_on_one_gateway_is_watched_in_a_browser_through_another() {
    let dir = tempfile::tempdir().expect("temp dir");
    let desk = Desktop::start(&dir.path().join("desktop"), 0, "bob", BOB_PASSWORD)
        .expect("the RDP target desktop");
    let c = cluster_with(2, "15s", "", |b, _| {
        b.rdp_target("win-dc01.test", &desk.address(), "bob", BOB_PASSWORD)
    });
    let screen = Xvfb::start(1024, 768).expect("the client's display");
    let port = c.gws[0].rdp_port.expect("gw-1's RDP front");
    let mut client = xfreerdp(&screen, port, "alice:win-dc01.test", ALICE_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("xfreerdp");
    let live = c.active(1, 1);
    let id = live[0]["id"].as_str().expect("id").to_string();
    assert_eq!(live[0]["gateway"], "gw-1");

    let out = run(
        c.gws[1]
            .wgctl()
            .args(["session", "shadow", &id, "--browser"]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = text(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(String::from)
        .expect("a link");
    assert!(
        url.starts_with(&c.gws[1].api) && url.contains(&format!("/shadow/{id}#ticket=")),
        "the link is gw-2's page: {url}"
    );
    let profile = c.env.path("chromium");
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
    // The canvas shows the target's red logo (shrunk by 2).
    let (_, _, target_rgb) = screenshot(&desk.xvfb);
    let on_target = red_pixels(&target_rgb);
    let red = poll(
        T,
        Duration::from_millis(300),
        || red_pixels(&parse_png(&browser.canvas_png("#desktop")).2) * 4,
        |red| red.abs_diff(on_target) * 100 <= on_target * 5,
    );
    assert!(
        on_target > 50_000 && red.abs_diff(on_target) * 100 <= on_target * 5,
        "the browser shows {red} red pixels (scaled up), the target's screen {on_target}"
    );
    // To look at the page: WARDENGATE_SCREENSHOTS=DIR keeps a picture of it.
    if let Some(shots) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
        let _ = std::fs::write(
            std::path::Path::new(&shots).join("cluster-desktop-shadow.png"),
            browser.screenshot(),
        );
    }
    // gw-1 attached the observer and audited it; the session lists it.
    let attach = c.gws[0].wait_audit("session.shadow.attach", T);
    assert_eq!(attach["actor"], "admin", "{attach}");
    assert_eq!(attach["session_id"], id.as_str(), "{attach}");
    let s = c.gws[1].get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["observers"][0]["name"], "admin", "{s}");
    // The page left: gw-1 detaches the observer.
    drop(browser);
    let detach = c.gws[0].wait_audit("session.shadow.detach", T);
    assert_eq!(detach["actor"], "admin", "{detach}");
    let _ = client.kill();
    let _ = client.wait();
}
