//! Approvals: three people over SSH, two approvers for PostgreSQL, once only, withdraw,
//! timeout, and the chat webhook.

use std::time::Duration;

use serde_json::{json, Value};
use wardengate_tests::tmux::{argv, Tmux};
use wardengate_tests::*;

use super::*;

#[test]
fn an_ssh_session_waits_for_an_approver_and_continues_when_approved() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy = "\n[[policies]]\nname = \"prod-ssh-write\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"group:sre-leads\", \"alice\"], required = 1, timeout = \"1m\", valid_for = \"5m\" }\n";
    let gw = gateway(&env, &sshd, policy).extra(&people(&env)).start();

    let tmux = Tmux::new(env.dir.path());
    let mut c = gw.ssh_interactive(&env, "alice:web-01.test");
    c.arg("-t");
    tmux.spawn("ssh", &[], &argv(&c));
    let screen = tmux.expect("ssh", "Ctrl-C to withdraw", T);
    assert!(screen.contains("waiting for approval req_"), "{screen}");
    assert!(screen.contains("(approvers: sre-leads, alice)"), "{screen}");
    let id = request_id(&screen);

    // carol sees it; dan may not decide; alice may not decide on her own request.
    let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list"]);
    assert_stdout_has(&out, &id);
    let out = wgctl_as(
        &gw,
        DAN_TOKEN,
        &["approval", "approve", &id, "--reason", "sure"],
    );
    assert_stderr_has(&out, "dan is not an approver");
    let out = wgctl_as(
        &gw,
        ALICE_TOKEN,
        &["approval", "approve", &id, "--reason", "me"],
    );
    assert_stderr_has(&out, "nobody decides on their own request");
    assert!(
        gw.sessions("?state=active").is_empty(),
        "admitted before approval"
    );
    // The wait is a session the operators see, with its request.
    let waiting = gw.sessions("?state=awaiting_approval");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["actor"], "alice", "{waiting:?}");
    let waiting_id = waiting[0]["id"].as_str().expect("id").to_string();
    let out = run(gw.wgctl().args(["session", "list"]), T);
    assert_stdout_has(&out, "awaiting_approval");

    let out = wgctl_as(
        &gw,
        CAROL_TOKEN,
        &["approval", "approve", &id, "--reason", "change 42"],
    );
    assert_stdout_has(&out, "approved (1/1 approvals");
    let sid = gw.wait_one_active();
    assert_eq!(
        sid, waiting_id,
        "the approved login continues the waiting session"
    );
    assert!(gw.sessions("?state=awaiting_approval").is_empty());
    tmux.line("ssh", "echo approved-$((40+2))");
    tmux.expect("ssh", "approved-42", T);
    let out = run(gw.wgctl().args(["session", "show", &sid]), T);
    assert_stdout_has(&out, "prod-ssh-write (approved by carol, 00:00:");
    for kind in ["approval.requested", "approval.granted", "approval.used"] {
        let e = gw.wait_audit(kind, T);
        assert_eq!(e["actor"], "alice", "{kind}: {e}");
    }
    let out = wgctl_as(
        &gw,
        ALICE_TOKEN,
        &["approval", "list", "--mine", "-o", "json"],
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["state"], "used", "{list}");
    assert_eq!(list[0]["decisions"][0]["by"], "carol", "{list}");

    // A second connection waits on a new request; Ctrl-C withdraws it.
    tmux.spawn("ssh2", &[], &argv(&c));
    let screen = tmux.expect("ssh2", "Ctrl-C to withdraw", T);
    let second = request_id(&screen);
    assert_ne!(second, id);
    tmux.keys("ssh2", &["C-c"]);
    let list = poll(
        T,
        Duration::from_millis(250),
        || {
            let out = wgctl_as(
                &gw,
                ALICE_TOKEN,
                &["approval", "list", "--mine", "-o", "json"],
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        },
        |l| l[0]["state"] == "withdrawn",
    );
    assert_eq!(list[0]["id"], second.as_str(), "{list}");
    let withdrawn = gw.wait_audit("approval.withdrawn", T);
    assert_eq!(withdrawn["detail"]["reason"], "client_left", "{withdrawn}");
    // Its waiting session ended, denied, with the reason.
    let rows = poll(
        T,
        Duration::from_millis(250),
        || gw.sessions("?state=denied"),
        |r| r.iter().any(|s| s["end_reason"] == "approval_withdrawn"),
    );
    assert!(
        gw.sessions("?state=awaiting_approval").is_empty(),
        "{rows:?}"
    );
}

#[test]
fn postgres_needs_two_approvers_once_and_a_request_times_out() {
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let policy = "\n[[policies]]\nname = \"dba-two-person\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"group:sre-leads\"], required = 2, timeout = \"6s\", valid_for = \"5m\" }\n";
    // The chat bot's webhook: refuses the first delivery (the gateway retries), takes the next.
    let (hook_port, hooks) = webhook_receiver();
    let gw = wardengate_tests::pg::pg_targets(env.gateway(), &pg)
        .user_token(ALICE_TOKEN)
        .extra(&format!(
            "[approvals]\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook\"\n\n{}",
            people(&env)
        ))
        .policies(policy)
        .start();
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert!(
        err.contains("policy dba-two-person needs approval: request req_"),
        "{err}"
    );
    let id = request_id(&err);
    let announced = hooks
        .recv_timeout(T)
        .expect("the request is announced again after a 500");
    assert_eq!(announced["request"], id.as_str(), "{announced}");
    assert_eq!(announced["actor"], "alice", "{announced}");
    assert_eq!(
        announced["approvers"],
        json!(["group:sre-leads"]),
        "{announced}"
    );

    let approve = |token: &str| {
        wgctl_as(
            &gw,
            token,
            &["approval", "approve", &id, "--reason", "ticket 7"],
        )
    };
    assert_success(&approve(CAROL_TOKEN), "carol approves");
    // One of two: still waiting, on the same request; carol cannot count twice.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert_eq!(request_id(&err), id, "{err}");
    assert_stderr_has(&approve(CAROL_TOKEN), "carol approved");
    assert_success(&approve(BOB_TOKEN), "bob approves");

    let out = run(
        gw.psql("alice#billing.test", "")
            .args(["-c", "select 40 + 2"]),
        T,
    );
    assert_success(&out, "psql once approved");
    assert_stdout_has(&out, "42");
    // Once: the next connection makes a new request, which alice withdraws.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    let second = request_id(&err);
    assert_ne!(second, id);
    let out = wgctl_as(&gw, ALICE_TOKEN, &["approval", "withdraw", &second]);
    assert_stdout_has(&out, "is withdrawn");

    // Nobody answers the third within 6 s: denied, approval_timeout.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    let third = request_id(&err);
    let list = poll(
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list", "-o", "json"]);
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        },
        |l| {
            l.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["id"] == third.as_str() && r["state"] == "denied")
            })
        },
    );
    let r = list
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == third.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(r["reason"], "approval_timeout", "{list}");
    let denied = gw.wait_audit("approval.denied", T);
    assert_eq!(denied["detail"]["reason"], "approval_timeout", "{denied}");
}

fn webhook_receiver() -> (u16, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook listener");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if n > 0 {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
        }
    });
    (port, rx)
}

#[test]
fn a_postgresql_request_survives_a_restart_and_admits_once_approved() {
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let policy = "\n[[policies]]\nname = \"dba-approved\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"group:sre-leads\"], required = 1, timeout = \"10m\", valid_for = \"5m\" }\n";
    let mut gw = wardengate_tests::pg::pg_targets(env.gateway(), &pg)
        .user_token(ALICE_TOKEN)
        .extra(&people(&env))
        .policies(policy)
        .start();
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    let id = request_id(&err);

    // The gateway restarts; the request is still there, still pending, and carol approves it.
    let (config, data) = (gw.config.clone(), gw.data.clone());
    gw.stop();
    let gw = GatewayProc::spawn(config, data);
    let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["state"], "pending", "{list}");
    let out = wgctl_as(
        &gw,
        CAROL_TOKEN,
        &["approval", "approve", &id, "--reason", "after the restart"],
    );
    assert_success(&out, "carol approves after a restart");
    let out = run(
        gw.psql("alice#billing.test", "")
            .args(["-c", "select 40 + 2"]),
        T,
    );
    assert_success(&out, "psql on the approval made across a restart");
    assert_stdout_has(&out, "42");
    let used = gw.wait_audit("approval.used", T);
    assert_eq!(used["detail"]["request"], id.as_str(), "{used}");
}

/// An access session under a policy that asks for approval: refused with its request (one per
/// person, resources and address; asking again finds the same one), nothing applied; approved by
/// another person, the start goes through and spends it; an approval for one address lets no
/// other address in.
#[test]
fn an_access_session_waits_for_an_approval_of_its_resources_and_address() {
    let env = TestEnv::new();
    let ledger = wardengate_tests::ledger::Ledger::new(env.path("allowed.txt"));
    let resources = ledger.resource("vault-ui", ("env", "prod"), "");
    let policy = "\n[[policies]]\nname = \"net-approved\"\ngroups = [\"sre\"]\n\
        protocols = [\"network\"]\nresource_tags = [\"env=prod\"]\n\
        approval = { approvers = [\"group:sre-leads\"], valid_for = \"5m\" }\n";
    let gw = env
        .gateway()
        .user_token(ALICE_TOKEN)
        .policies(policy)
        .extra(&people(&env))
        .extra(&super::console::console_people(&env, ""))
        .extra(&resources)
        .start();
    let start = |extra: &[&str]| {
        let mut args = vec!["access", "start", "-o", "json"];
        args.extend_from_slice(extra);
        wgctl_as(&gw, ALICE_TOKEN, &args)
    };
    let refused = |out: &std::process::Output| {
        assert!(!out.status.success(), "started without an approval");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("policy net-approved needs approval: request req_")
                && err.contains("start the access session again once it is approved, within 5m"),
            "{err}"
        );
        request_id(&err)
    };
    let id = refused(&start(&[]));
    assert_eq!(
        refused(&start(&[])),
        id,
        "asking again opens no second request"
    );
    assert_eq!(ledger.read(), "");
    let none = gw.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(none["sessions"], json!([]), "{none:#}");
    let requested = gw.wait_audit("approval.requested", T);
    assert_eq!(requested["detail"]["protocol"], "network", "{requested}");
    // The approver sees what is asked: the resources and the address to let in.
    let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list"]);
    assert_stdout_has(&out, "vault-ui from 127.0.0.1");
    // And so does the console's Approvals page (alice sees her own request there).
    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    super::console_page::console_sign_in(c, &origin, "/console/approvals");
    super::console_page::until(
        c,
        "Array.from(document.querySelectorAll('#approvals tbody tr')).map((r) => r.textContent).join('|')",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("vault-ui from 127.0.0.1") && t.contains("pending")),
    );
    super::console_page::shot(c, "console-approvals-network.png");
    let out = wgctl_as(
        &gw,
        CAROL_TOKEN,
        &["approval", "approve", &id, "--reason", "incident 12"],
    );
    assert_success(&out, "carol approves");
    // Another address is not what was approved.
    let other = refused(&start(&["--from", "127.0.0.2"]));
    assert_ne!(other, id);
    let out = start(&[]);
    assert_success(&out, "access start once approved");
    let s: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(s["approval"], format!("{id} (approved by carol)"), "{s:#}");
    assert_eq!(ledger.read().trim(), "vault-ui 127.0.0.1");
    // Spent: the next start asks anew.
    let list = gw.get_json("/api/v1/approvals");
    let used = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list:#}"));
    assert_eq!(used["state"], "used", "{used:#}");
    let next = refused(&start(&[]));
    assert!(next != id && next != other, "{next}");
}
