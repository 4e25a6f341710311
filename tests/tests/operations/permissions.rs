//! Who may call what over the API: every documented route is served, and each refusal of a
//! person's own token names the permission it lacks.

use wardengate_tests::*;

/// Who may call what: every route the OpenAPI document lists is served (none falls through to
/// "no such endpoint"), and a user's own, non-operator token gets 403 on every one of them but
/// the five that show, hand off and accept their own sessions, the four of their own security
/// keys and the two of their own approval requests; every other refusal names the permission. A route added without being put
/// with the users' is an operator's; one put there by mistake fails here.
#[test]
fn a_users_token_reaches_only_the_user_routes_and_every_documented_route_is_served() {
    const DAN_TOKEN: &str = "dan-0123456789abcdef0123456789abcdef";
    let env = TestEnv::new();
    let sshd = env.sshd();
    let users = format!(
        "[[users]]\nname = \"dan\"\npublic_keys = [\"{}\"]\napi_token_sha256 = \"{}\"\n\n",
        env.alice_pub,
        sha256_hex(DAN_TOKEN.as_bytes())
    );
    let gw = env
        .gateway()
        .target_at("web-01.test", &sshd.address(), &sshd.user)
        .extra(&users)
        .start();
    let doc = gw.get_json("/api/v1/openapi.json");
    let paths = doc["paths"].as_object().expect("paths");
    // Open routes: no token at all (health) or a one-time browser ticket instead of a token.
    let open = |p: &str| {
        p == "/healthz"
            || p.ends_with("/ws")
            || p.contains("/ceremony/")
            || p.contains("/login/")
            || p == "/api/v1/console/login"
            || p == "/api/v1/console/session"
    };
    // The console's live stream never ends: it is served (the console tests read it), and only
    // its refusal is checked here.
    let streams = |p: &str| p == "/api/v1/console/events";
    let user = [
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/{id}"),
        ("POST", "/api/v1/sessions/{id}/handoff"),
        ("POST", "/api/v1/sessions/{id}/accept"),
        ("POST", "/api/v1/sessions/{id}/decline"),
        // TCP sessions: authorize one for themselves, cancel or close their own.
        ("POST", "/api/v1/targets/{name}/authorize"),
        ("POST", "/api/v1/sessions/{id}/cancel"),
        ("POST", "/api/v1/sessions/{id}/close"),
        // Network access sessions: start their own, list, show and stop their own.
        ("POST", "/api/v1/access-sessions"),
        ("GET", "/api/v1/access-sessions"),
        ("GET", "/api/v1/access-sessions/{id}"),
        ("POST", "/api/v1/access-sessions/{id}/stop"),
        // Their own security keys.
        ("POST", "/api/v1/mfa/enroll"),
        ("POST", "/api/v1/mfa/prove"),
        ("GET", "/api/v1/mfa/keys"),
        ("DELETE", "/api/v1/mfa/keys/{id}"),
        // Their own approval requests (deciding needs approval.decide).
        ("GET", "/api/v1/approvals"),
        ("POST", "/api/v1/approvals/{id}/withdraw"),
        ("POST", "/api/v1/logout"),
        // Who they are, and their own saved views of the console.
        ("GET", "/api/v1/console/me"),
        ("POST", "/api/v1/console/logout"),
        ("GET", "/api/v1/console/queries"),
        ("PUT", "/api/v1/console/queries/{name}"),
        ("DELETE", "/api/v1/console/queries/{name}"),
    ];
    let mut checked = 0;
    let mut perms = std::collections::BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = method.to_uppercase();
            let concrete = path
                .replace("{id}", "sess_00000000000000000000")
                .replace("{name}", "dan");
            let body = if m == "POST" { "{}" } else { "" };
            if !streams(path) {
                let (status, text) = gw.request(&m, &concrete, &gw.token, body);
                assert!(
                    !(status == 404 && text.contains("no such endpoint")),
                    "{m} {path} is documented but not served: {text}"
                );
            }
            if open(path) {
                continue;
            }
            let (status, text) = gw.request(&m, &concrete, DAN_TOKEN, body);
            if user.contains(&(m.as_str(), path.as_str())) {
                // (A handler may still refuse dan for its own reason, e.g. no network
                // resource granted; never for a permission.)
                assert!(
                    !(status == 403 && text.contains("it needs ")),
                    "{m} {path} refused to dan's token: {text}"
                );
            } else {
                assert_eq!(status, 403, "{m} {path} with dan's token: {text}");
                let perm = needs(&m, path);
                assert!(
                    text.contains(&format!("it needs {perm}")),
                    "{m} {path} should name {perm}: {text}"
                );
                perms.insert(perm);
            }
            checked += 1;
        }
    }
    assert!(checked >= 28, "only {checked} routes checked");
    // Every permission guards at least one route, and each refusal is audited.
    // (session.handoff is checked by the handoff handler: one's own sessions need none.)
    assert_eq!(perms.len(), 8, "{perms:?}");
    let forbidden = gw.audit("api.forbidden");
    assert!(
        forbidden
            .iter()
            .any(|e| e["actor"] == "dan" && e["detail"]["missing"] == "user.admin"),
        "{forbidden:?}"
    );
}

/// The permission a route needs, as the README's table says.
fn needs(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("POST", "/api/v1/approvals/{id}/approve" | "/api/v1/approvals/{id}/deny") => {
            "approval.decide"
        }
        ("POST", "/api/v1/sessions/terminate" | "/api/v1/sessions/{id}/terminate") => {
            "session.terminate"
        }
        (_, "/api/v1/sessions/{id}/shadow" | "/api/v1/sessions/{id}/shadow/browser") => {
            "session.shadow"
        }
        ("GET", "/api/v1/policies" | "/api/v1/policies/explain") => "session.read",
        ("GET", "/api/v1/console/events" | "/api/v1/sessions/{id}/timeline") => "session.read",
        (_, p) if p.starts_with("/api/v1/console-sessions") => "user.admin",
        ("POST", "/api/v1/policies/reload") => "policy.reload",
        (_, p) if p.starts_with("/api/v1/audit") => "audit.read",
        (_, p) if p.starts_with("/api/v1/recordings") => "recording.read",
        ("POST", "/api/v1/users/{name}/mfa-reset") => "user.admin",
        _ => "every permission",
    }
}
