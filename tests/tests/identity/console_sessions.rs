//! Console sessions in Kibana's model, over HTTP with short durations: both halves needed,
//! idle timeout, lifespan, the cleanup task, max sessions evicting the oldest, `_invalidate` by
//! query and all, CSRF and permission refusals, one answer to every failed sign-in.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wardengate_tests::*;

use super::console::{console_people, ERIN_PASSWORD};
use super::*;

/// A browser-less console client: its cookie and CSRF token.
struct Console {
    api: String,
    http: reqwest::blocking::Client,
    cookie: String,
    csrf: String,
    id: String,
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Sign in with a password alone (a person with no key, whom no role asks for one).
fn sign_in(gw: &GatewayProc, user: &str, password: &str) -> Console {
    let http = http();
    let r = http
        .post(format!("{}/api/v1/console/login", gw.api))
        .json(&json!({"user": user, "password": password}))
        .send()
        .expect("login");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    let started: Value = r.json().expect("json");
    assert!(started["ticket"].is_null(), "{started}");
    let r = http
        .post(format!("{}/api/v1/console/session", gw.api))
        .json(&json!({"grant": started["grant"]}))
        .send()
        .expect("session");
    assert_eq!(r.status().as_u16(), 200);
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    let cookie = set.split(';').next().expect("name=value").to_string();
    let me: Value = r.json().expect("json");
    Console {
        api: gw.api.clone(),
        http,
        cookie,
        csrf: me["csrf"].as_str().expect("csrf").to_string(),
        id: me["console_session"].as_str().expect("id").to_string(),
    }
}

impl Console {
    fn me(&self) -> u16 {
        self.http
            .get(format!("{}/api/v1/console/me", self.api))
            .header("cookie", &self.cookie)
            .send()
            .expect("me")
            .status()
            .as_u16()
    }

    fn post(&self, path: &str, csrf: Option<&str>, body: Value) -> (u16, String) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.api))
            .header("cookie", &self.cookie)
            .json(&body);
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        let r = r.send().expect("post");
        (r.status().as_u16(), r.text().unwrap_or_default())
    }
}

/// The audit event `kind` about console session `id`.
fn event(gw: &GatewayProc, kind: &str, id: &str) -> Value {
    poll(
        T,
        Duration::from_millis(200),
        || {
            gw.audit(kind)
                .into_iter()
                .find(|e| e["detail"]["console_session"] == id)
        },
        Option::is_some,
    )
    .unwrap_or(Value::Null)
}

#[test]
fn console_sessions_expire_are_cleaned_evicted_and_invalidated_like_kibana() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let console =
        "idle_timeout = \"4s\"\nlifespan = \"15s\"\ncleanup_interval = \"10s\"\nmax_sessions = 2";
    let gw = gateway(&env, &sshd, STEP_UP)
        .extra(&console_people(&env, console))
        .start();

    // Both halves: the cookie alone after its record went, or a cookie this gateway did not
    // seal, is signed out.
    let a = sign_in(&gw, "alice", ALICE_PASSWORD);
    assert_eq!(a.me(), 200);
    let forged = Console {
        cookie: "wg_console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ..sign_in(&gw, "erin", ERIN_PASSWORD)
    };
    assert_eq!(forged.me(), 401);

    // A wrong password and an unknown name get the same answer (and no cookie).
    let refusal = |user: &str, password: &str| {
        let r = http()
            .post(format!("{}/api/v1/console/login", gw.api))
            .json(&json!({"user": user, "password": password}))
            .send()
            .expect("login");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let wrong = refusal("alice", "not her password");
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert_eq!(refusal("mallory", "anything"), wrong);
    let failed = gw.wait_audit("login.failed", T);
    assert_eq!(
        failed["detail"]["reason"], "wrong password or user",
        "{failed}"
    );

    // CSRF: a change without the session's token is refused (and audited); with it, it works.
    let (status, body) = a.post(
        "/api/v1/sessions/terminate",
        None,
        json!({"reason": "x", "actor": "bob"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("X-CSRF-Token"), "{body}");
    let (status, _) = a.post(
        "/api/v1/sessions/terminate",
        Some("wrong"),
        json!({"reason": "x", "actor": "bob"}),
    );
    assert_eq!(status, 403);
    let refused = gw.wait_audit("api.csrf_refused", T);
    assert_eq!(refused["actor"], "alice", "{refused}");

    // Permissions: erin reads sessions; terminating is refused naming the permission.
    let erin = sign_in(&gw, "erin", ERIN_PASSWORD);
    let (status, body) = erin.post(
        "/api/v1/sessions/terminate",
        Some(&erin.csrf),
        json!({"reason": "x", "actor": "bob"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("session.terminate"), "{body}");

    // Idle timeout: requests keep a session alive; 4 s without one ends it.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(a.me(), 200, "a session in use stays signed in");
    }
    std::thread::sleep(Duration::from_millis(5000));
    assert_eq!(a.me(), 401, "idle longer than idle_timeout");
    assert_eq!(
        event(&gw, "console.expired", &a.id)["detail"]["reason"],
        "idle_timeout"
    );

    // Lifespan: however busy, 15 s after signing in it is over.
    let b = sign_in(&gw, "alice", ALICE_PASSWORD);
    let started = Instant::now();
    while b.me() == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "lifespan never ended it"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(14_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        event(&gw, "console.expired", &b.id)["detail"]["reason"],
        "lifespan"
    );

    // Cleanup: a record nobody comes back for is removed by the cleanup task (no request made).
    let c = sign_in(&gw, "erin", ERIN_PASSWORD);
    let e = event(&gw, "console.expired", &c.id);
    assert_eq!(e["detail"]["reason"], "idle_timeout", "{e}");

    // max_sessions = 2: a third sign-in invalidates the oldest.
    let one = sign_in(&gw, "alice", ALICE_PASSWORD);
    let two = sign_in(&gw, "alice", ALICE_PASSWORD);
    let three = sign_in(&gw, "alice", ALICE_PASSWORD);
    assert_eq!((one.me(), two.me(), three.me()), (401, 200, 200));
    let ev = event(&gw, "console.evicted", &one.id);
    assert_eq!(ev["detail"]["max_sessions"], 2, "{ev}");

    // _invalidate: by query (one person), then all, through wgctl and the API.
    let erin = sign_in(&gw, "erin", ERIN_PASSWORD);
    let out = run(gw.wgctl().args(["console-session", "list"]), T);
    assert_stdout_has(&out, &three.id);
    assert_stdout_has(&out, &erin.id);
    let out = run(
        gw.wgctl().args([
            "console-session",
            "invalidate",
            "--user",
            "alice",
            "--reason",
            "offboarding",
        ]),
        T,
    );
    assert_stdout_has(&out, "invalidated 2 console session(s)");
    assert_eq!((two.me(), three.me(), erin.me()), (401, 401, 200));
    let (status, body) = gw.post(
        "/api/v1/console-sessions/_invalidate",
        r#"{"match": "query"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw.post(
        "/api/v1/console-sessions/_invalidate",
        r#"{"match": "all"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(erin.me(), 401);
    let inv = gw.wait_audit("console.invalidated", T);
    assert_eq!(inv["detail"]["reason"], "offboarding", "{inv}");
}
