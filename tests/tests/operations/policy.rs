//! Policy files: offline check with precise errors, the example policies, `policy explain`,
//! reload on SIGHUP and through the API without touching live sessions, and a broken reload
//! keeping the old policies.

use std::path::PathBuf;
use std::time::Duration;

use wardengate_tests::live::Live;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(30);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/policies")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures/policies")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_policies_are_valid() {
    let files = example_files();
    assert!(files.len() >= 3, "{files:?}");
    let out = run(
        std::process::Command::new(bin("wgctl"))
            .args(["policy", "check"])
            .args(&files),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in [
        "sre-dev",
        "contractor-web",
        "dba-postgres",
        "oncall-lead-breakglass",
    ] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn a_broken_policy_file_is_rejected_with_file_line_and_key() {
    let env = TestEnv::new();
    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[[policy]]\nname = \"oops\"\ngroups = [\"sre\"]\nidle_timeout = \"fifteen minutes\"\n",
    )
    .expect("write");
    let out = run(
        std::process::Command::new(bin("wgctl"))
            .args(["policy", "check"])
            .arg(&bad),
        T,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(&out, &format!("{} line 4", bad.display()));
    assert_stderr_has(&out, "<count><unit>");

    std::fs::write(
        &bad,
        "[[policy]]\nname = \"oops\"\nreconnect = { mode = \"resume\", grace = \"0\" }\n",
    )
    .expect("write");
    let config = env.path("gw.toml");
    std::fs::write(
        &config,
        format!("[gateway]\npolicy_files = [\"{}\"]\n", bad.display()),
    )
    .expect("write");
    let out = run(
        std::process::Command::new(bin("wardengate"))
            .args(["check-config", "--config"])
            .arg(&config),
        T,
    );
    assert!(!out.status.success());
    assert_stderr_has(
        &out,
        &format!(
            "{} line 3: policy.oops.reconnect: grace must be longer than 0",
            bad.display()
        ),
    );
}

#[test]
fn explain_names_the_admitting_policy_and_why_others_did_not_match() {
    let (env, _sshd, gw) = standard_with(|gw| {
        gw.gateway_lines(&format!("policy_files = [\"{}\"]", fixtures().display()))
    });
    let out = gw.policy_explain("alice", "web-01.test", &["--protocol", "ssh"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert_has_all(
        &s,
        &[
            "ADMITTED by policy sre-test",
            "target web-01.test lacks tag env=dev",
            "actor alice (groups sre) is not among its users/groups",
        ],
    );
    assert!(
        s.contains("fixtures/policies/sre.toml:"),
        "sources are shown: {s}"
    );
    let out = gw.policy_explain(
        "alice",
        "web-01.test",
        &["--protocol", "postgres", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["admitted_by"], "sre-test", "{v}");
    let out = gw.policy_explain("mallory", "web-01.test", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(&out, "unknown user 'mallory'");
    // session show names the admitting policy and where it was defined.
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    let out = run(gw.wgctl().args(["session", "show", &id]), T);
    let s = text(&out.stdout);
    assert!(
        s.contains("sre-test (") && s.contains("gateway.toml:"),
        "{s}"
    );
    assert_has_all(&s, &["admits: matches group sre, tag env=test", "idle=15m"]);
}

#[test]
fn reload_applies_to_new_sessions_only_and_a_broken_file_keeps_the_old_policies() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let file = env.path("access.toml");
    let allow = "[[policy]]\nname = \"allow-sre\"\ngroups = [\"sre\"]\n";
    std::fs::write(&file, allow).expect("write");
    let gw = env
        .gateway()
        .target("web-01.test", &sshd)
        .gateway_lines(&format!("policy_files = [\"{}\"]", file.display()))
        .policies("")
        .start();
    let mut live = Live::spawn(gw.ssh(&env, "alice:web-01.test").args(["-tt"]));
    live.send("echo before-$((2*5))\n");
    live.expect("before-10", T);

    // SIGHUP with a policy that no longer admits alice.
    std::fs::write(
        &file,
        "[[policy]]\nname = \"bob-only\"\nusers = [\"bob\"]\n",
    )
    .expect("write");
    let pid = gw.pid();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    let reloaded = gw.wait_audit("policy.reloaded", T);
    assert_eq!(reloaded["detail"]["trigger"], "sighup");
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(
        &out,
        "policy bob-only: actor alice (groups sre) is not among its users/groups",
    );
    // The live session keeps the policy that admitted it.
    live.send("echo after-$((2*6))\n");
    live.expect("after-12", T);
    assert_eq!(gw.sessions("?state=active").len(), 1);

    // A broken file: the API says why, and the previous policies stay.
    std::fs::write(&file, "[[policy]]\nname = \"x\"\nshadow = \"sometimes\"\n").expect("write");
    let out = run(gw.wgctl().args(["policy", "reload"]), T);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(&out, "reload failed; the previous policies stay in force");
    assert_stderr_has(&out, &format!("{} line 3", file.display()));
    assert_eq!(gw.audit("policy.reload_failed").len(), 1);
    let list = run(gw.wgctl().args(["policy", "list"]), T);
    assert_stdout_has(&list, "bob-only");

    // Back to allowing alice, through the API.
    std::fs::write(&file, allow).expect("write");
    let out = run(gw.wgctl().args(["policy", "reload"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reloaded: 1 policies (allow-sre)"));
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    live.send("exit\n");
    assert!(live.wait(T).is_some());
}
