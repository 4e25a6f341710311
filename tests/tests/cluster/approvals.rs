//! Approvals across the cluster: alice's ssh waits on the gateway she reached; the approver
//! lists and decides on another one, and her login continues at once.

use std::time::Duration;

use wardengate_tests::cluster::STORE_PASSWORD;
use wardengate_tests::tmux::{argv, Tmux};
use wardengate_tests::*;

use crate::cluster_with;

const T: Duration = Duration::from_secs(30);

/// The `req_…` a refusal or the waiting screen names.
fn request_id(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("req_"))
        .map(|w| w.trim_matches(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_'))
        .expect("a request id")
        .to_string()
}

#[test]
fn an_approval_decided_on_another_gateway_lets_the_waiting_ssh_continue() {
    let policy = "\n[[policies]]\nname = \"change\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\
        approval = { approvers = [\"admin\"], required = 1, timeout = \"1m\", valid_for = \"5m\" }\n";
    let c = cluster_with(2, "15s", "", |b, _| b.policies(policy));
    let tmux = Tmux::new(c.env.dir.path());
    let mut ssh = c.gws[0].ssh_interactive(&c.env, "alice#web.test");
    ssh.arg("-t");
    tmux.spawn("ssh", &[], &argv(&ssh));
    let screen = tmux.expect("ssh", "Ctrl-C to withdraw", T);
    let id = request_id(&screen);

    // gw-2 lists the request gw-1 holds, and its decision reaches gw-1.
    let listed = c.gws[1].get_json("/api/v1/approvals?state=pending");
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == id.as_str())),
        "gw-2 lists {id}: {listed}"
    );
    let (status, body) = c.gws[1].post(
        &format!("/api/v1/approvals/{id}/approve"),
        r#"{"reason":"change 7 from gw-2"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"approved\""), "{body}");
    // The shell runs what alice types (the marker is computed, so the typed line is not it).
    tmux.line("ssh", "echo approved-$((6*7))");
    tmux.expect("ssh", "approved-42", T);
    let granted = c.gws[1].wait_audit("approval.granted", T);
    assert_eq!(granted["detail"]["by"], "admin", "{granted}");
    // Deciding again anywhere: decided already.
    let (status, body) = c.gws[1].post(
        &format!("/api/v1/approvals/{id}/deny"),
        r#"{"reason":"too late"}"#,
    );
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_postgresql_login_approved_through_one_gateway_is_admitted_once_through_another() {
    let policy = "\n[[policies]]\nname = \"dba-change\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\
        protocols = [\"postgres\"]\n\
        approval = { approvers = [\"admin\"], required = 1, timeout = \"1m\", valid_for = \"5m\" }\n";
    // The store's own server stands in as the target (its role `wardengate`, database forced).
    let c = cluster_with(2, "15s", "", |b, pg| {
        b.policies(policy).pg_target_with(
            "store.test",
            &pg.address(),
            "wardengate",
            STORE_PASSWORD,
            "database = \"wardengate\"",
        )
    });
    let psql = |i: usize| {
        run(
            c.gws[i]
                .psql("alice#store.test", "")
                .args(["-c", "select 40 + 2"]),
            T,
        )
    };
    // Through gw-1: refused with the request to approve.
    let out = psql(0);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("needs approval: request req_"),
        "{err}"
    );
    let id = request_id(&err);
    let (status, body) = c.gws[1].post(
        &format!("/api/v1/approvals/{id}/approve"),
        r#"{"reason":"ticket 9"}"#,
    );
    assert_eq!(status, 200, "{body}");
    // Through gw-2: admitted on the approval gw-1 holds, which is spent there.
    let out = psql(1);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("42"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = c.gws[0].wait_audit("approval.used", T);
    assert_eq!(used["detail"]["request"], id.as_str(), "{used}");
    // Once only: the next login, through either gateway, asks again.
    let out = psql(0);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("needs approval: request req_"),
        "{err}"
    );
    assert!(!err.contains(&id), "a new request, not {id}: {err}");
}

/// An access session's approval asked for through gw-1 and decided through gw-2: the next start
/// through gw-2 claims it from gw-1 (spent there, once) and opens the rules.
#[test]
fn an_access_sessions_approval_asked_on_one_gateway_is_claimed_through_another() {
    const ALICE: &str = "alice-cluster-approval-token";
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = wardengate_tests::ledger::Ledger::new(dir.path().join("allowed.txt"));
    let extra = ledger.resource("vault-ui", ("env", "prod"), "");
    let policy = "\n[[policies]]\nname = \"net-approved\"\ngroups = [\"sre\"]\n\
        protocols = [\"network\"]\nresource_tags = [\"env=prod\"]\n\
        approval = { approvers = [\"admin\"], valid_for = \"5m\" }\n";
    let c = cluster_with(2, "15s", &extra, |b, _| {
        b.user_token(ALICE).policies(policy)
    });
    let start = |i: usize| {
        c.gws[i].request(
            "POST",
            "/api/v1/access-sessions",
            ALICE,
            "{\"duration\":\"1h\"}",
        )
    };
    let (status, body) = start(0);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs approval"), "{body}");
    let id = request_id(&body);
    let (status, body) = c.gws[1].post(
        &format!("/api/v1/approvals/{id}/approve"),
        r#"{"reason":"incident 9"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(ledger.read(), "");
    let (status, body) = start(1);
    assert_eq!(status, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(s["gateway"], "gw-2", "{s:#}");
    assert_eq!(s["approval"], format!("{id} (approved by admin)"), "{s:#}");
    assert!(ledger.read().contains("vault-ui 127.0.0.1"));
    // Spent on gw-1 too: asking through gw-1 again is a new request.
    let (status, body) = start(0);
    assert_eq!(status, 403, "{body}");
    assert_ne!(request_id(&body), id, "{body}");
}
