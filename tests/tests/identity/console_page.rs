//! Driving the console's pages in headless Chromium: sign in, open a page and wait for it,
//! click, and wait for what the page shows (failing with its last value).

use std::time::Duration;

use serde_json::{json, Value};
use wardengate_tests::ALICE_PASSWORD;

use super::T;

/// Sign in to the console in the browser with a password (the person has no key).
pub(crate) fn console_sign_in(
    c: &mut wardengate_tests::browser::Chromium,
    origin: &str,
    path: &str,
) {
    sign_in_as(c, origin, path, "alice", ALICE_PASSWORD);
}

pub(crate) fn sign_in_as(
    c: &mut wardengate_tests::browser::Chromium,
    origin: &str,
    path: &str,
    user: &str,
    password: &str,
) {
    c.navigate(&format!("{origin}{path}"));
    until(c, "location.pathname", T, |v| v == &json!("/console/login"));
    until(
        c,
        "!!window.WG && (document.getElementById('form') || {dataset: {}}).dataset.ready === '1'",
        T,
        |v| v == &json!(true),
    );
    shot(c, "console-login.png");
    c.eval(&format!(
        "(() => {{ document.getElementById('user').value = {}; \
         document.getElementById('password').value = {}; \
         document.getElementById('form').requestSubmit(); }})()",
        json!(user),
        json!(password)
    ));
    // Either the console opens or the page says why not (its status line carries the error).
    until(
        c,
        "location.pathname === '/console' ? 'signed in' : \
         ((document.getElementById('status') || {dataset: {}}).dataset.state === 'failed' \
          ? 'refused: ' + document.getElementById('status').textContent : 'waiting')",
        T,
        |v| v == &json!("signed in"),
    );
    goto(c, origin, path);
    until(
        c,
        "(document.getElementById('who') || {}).textContent",
        T,
        |v| v == &json!(user),
    );
}

/// Wait until the page's `expr` satisfies `done`; fail with its last value if it never does.
pub(crate) fn until(
    c: &mut wardengate_tests::browser::Chromium,
    expr: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let v = c.eval_until(expr, timeout, &done);
    assert!(
        done(&v),
        "the page never got there: {expr}\nlast value: {v}"
    );
    v
}

/// Open a console page and wait until it is that page, loaded (Page.navigate does not wait).
pub(crate) fn goto(c: &mut wardengate_tests::browser::Chromium, origin: &str, path: &str) {
    c.navigate(&format!("{origin}{path}"));
    let pathname = path.split('#').next().unwrap_or(path);
    until(
        c,
        &format!(
            "location.pathname === {} && document.readyState === 'complete'",
            json!(pathname)
        ),
        T,
        |v| v == &json!(true),
    );
}

/// Click the session's action button `text`, once it is there.
pub(crate) fn click_button(c: &mut wardengate_tests::browser::Chromium, text: &str) {
    until(
        c,
        &format!(
            "(() => {{ const b = Array.from(document.querySelectorAll('.actions button')).find((b) => b.textContent === {}); \
             if (!b) return false; b.click(); return true; }})()",
            json!(text)
        ),
        T,
        |v| v == &json!(true),
    );
}

/// Click the element `selector` names, once it is there.
pub(crate) fn click(c: &mut wardengate_tests::browser::Chromium, selector: &str) {
    until(c,
        &format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        ),
        T,
        |v| v == &json!(true),
    );
}

/// Keep a picture of the page when `WARDENGATE_SCREENSHOTS` names a directory.
pub(crate) fn shot(c: &mut wardengate_tests::browser::Chromium, name: &str) {
    if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), c.screenshot());
    }
}
