//! Real clients through `wgctl connect`: curl against an HTTP server, and OpenSSH with the
//! engineer's own key (the gateway injects nothing) under a `recording = "metadata"` policy; and
//! a TCP target under a policy that needs an approval.

use std::time::Duration;

use wardengate_dev::services;
use wardengate_tests::tcp::wgctl_as;
use wardengate_tests::{assert_success, run, TestEnv};

use super::{ended, gateway, states, ALICE};

#[test]
fn curl_through_wgctl_connect_http() {
    let env = TestEnv::new();
    let root = env.path("www");
    std::fs::create_dir_all(&root).expect("www");
    std::fs::write(root.join("status.txt"), "all systems nominal\n").expect("file");
    let web = services::http(&root, 0).expect("http server");
    let targets = format!(
        "[[targets]]\nname = \"intranet\"\nprotocol = \"tcp\"\naddress = \"{}\"\ntags = {{ env = \"test\" }}\n\n",
        web.address()
    );
    let gw = gateway(&env, &targets, None);
    let out = run(
        wgctl_as(&gw, ALICE).args([
            "connect",
            "http",
            "intranet",
            "--path",
            "/status.txt",
            "--",
            "-s",
            "--fail",
        ]),
        Duration::from_secs(30),
    );
    assert_success(&out, "wgctl connect http");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "all systems nominal\n"
    );
    let s = &gw.sessions("?protocol=tcp&state=terminated")[0];
    // curl's one connection was the session's one allowed: it ends by its limit or the
    // client's close, whichever the gateway saw first.
    let reason = s["end_reason"].as_str().unwrap_or_default();
    assert!(
        ["connection_limit", "closed_by_client"].contains(&reason),
        "{s:#}"
    );
    let text = gw.recording_export(s["id"].as_str().expect("id"), "text");
    assert!(text.contains("#1 > GET /status.txt HTTP/1.1"), "{text}");
    assert!(text.contains("all systems nominal"), "{text}");
}

#[test]
fn ssh_with_the_engineers_own_key_recorded_as_metadata() {
    let env = TestEnv::new();
    // The host trusts alice's own key: the gateway holds no secret for it.
    let sshd = wardengate_dev::sshd::Sshd::start(
        &env.path("box"),
        0,
        std::slice::from_ref(&env.alice_pub),
    )
    .expect("sshd");
    let targets = format!(
        "[[targets]]\nname = \"box\"\nprotocol = \"tcp\"\naddress = \"{}\"\ntags = {{ env = \"own-key\" }}\n\n",
        sshd.address()
    );
    let policies =
        "[[policies]]\nname = \"own-keys\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=own-key\"]\n\
                    protocols = [\"tcp\"]\nrecording = \"metadata\"\n";
    let gw = gateway(&env, &targets, Some(policies));
    let key = env.alice_key.display().to_string();
    let out = run(
        wgctl_as(&gw, ALICE).args([
            "connect",
            "ssh",
            "box",
            "-u",
            &sshd.user,
            "--",
            "-i",
            &key,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "echo",
            "hello-from-box",
        ]),
        Duration::from_secs(60),
    );
    assert_success(&out, "wgctl connect ssh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-from-box"
    );
    let id = gw.sessions("?protocol=tcp&state=terminated")[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let s = ended(&gw, &id);
    assert_eq!(states(&s)[0].0, "pending");
    assert!(s["bytes_in"].as_u64().unwrap_or(0) > 0, "{s:#}");
    // Metadata only: the connection, its sizes and times; none of the SSH bytes.
    let text = gw.recording_export(&id, "text");
    assert!(text.contains("-- connection {"), "{text}");
    assert!(text.contains("\"bytes_from_client\""), "{text}");
    assert!(
        !text.contains("#1 >") && !text.contains("SSH-2.0"),
        "{text}"
    );
    let verify = run(
        gw.wgctl().args(["recording", "verify", &id]),
        Duration::from_secs(30),
    );
    assert_success(&verify, "recording verify");
}

#[test]
fn a_tcp_target_under_approval_waits_for_it_and_under_mfa_asks_for_a_key() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"prod-cache\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\ntags = {{ env = \"prod\" }}\n\n\
         [[targets]]\nname = \"keyed-cache\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\ntags = {{ env = \"keyed\" }}\n\n",
        addr = redis.address()
    );
    let policies =
        "[[policies]]\nname = \"prod\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=prod\"]\n\
                    approval = { approvers = [\"bob\"] }\n\n\
         [[policies]]\nname = \"keyed\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=keyed\"]\nmfa = \"webauthn\"\n";
    let gw = gateway(&env, &targets, Some(policies));
    // A security key the policy asks for, and alice has none: she is told, no session is left.
    let keyed = wardengate_tests::tcp::authorize(&gw, ALICE, "keyed-cache", &[]);
    assert!(!keyed.status.success());
    let err = String::from_utf8_lossy(&keyed.stderr);
    assert!(
        err.contains("requires a security key") && err.contains("wgctl mfa enroll"),
        "{err}"
    );
    assert!(gw.sessions("?protocol=tcp&state=pending").is_empty());
    let first = wardengate_tests::tcp::authorize(&gw, ALICE, "prod-cache", &[]);
    assert!(!first.status.success());
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(err.contains("needs approval: request"), "{err}");
    assert!(err.contains("authorize again once it is approved"), "{err}");
    let request = err
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("req_"))
        .expect("request id")
        .to_string();
    let out = run(
        wgctl_as(&gw, super::BOB).args(["approval", "approve", &request, "--reason", "change 7"]),
        Duration::from_secs(20),
    );
    assert_success(&out, "bob approves");
    let a = wardengate_tests::tcp::authorized(&gw, ALICE, "prod-cache", &[]);
    let s = super::session(&gw, a["session_id"].as_str().expect("id"));
    assert!(
        s["decision"]["approval"].to_string().contains(&request),
        "{s:#}"
    );
}

#[test]
fn psql_through_wgctl_connect_psql_with_its_own_password() {
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let targets = format!(
        "[[targets]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\ntags = {{ env = \"test\" }}\n\n",
        pg.address()
    );
    let gw = gateway(&env, &targets, None);
    // The engineer brings the database password (the gateway injects nothing for a tcp
    // target): psql reads it from PGPASSWORD and connects once, the session's one connection.
    let out = run(
        wgctl_as(&gw, ALICE)
            .env("PGPASSWORD", wardengate_tests::pg::RO_PASSWORD)
            .env("PGSSLMODE", "disable")
            .args([
                "connect",
                "psql",
                "db",
                "-u",
                "billing_ro",
                "-d",
                "billing",
                "--",
            ])
            .args(["-XAtc", "select count(*) from invoices"]),
        Duration::from_secs(60),
    );
    assert_success(&out, "wgctl connect psql");
    let count = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(count.parse::<u64>().is_ok(), "{count}");
    let s = &gw.sessions("?protocol=tcp&state=terminated")[0];
    assert_eq!(s["tcp"]["connections"], 1, "{s:#}");
}
