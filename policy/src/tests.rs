//! The policy decision, explained: unit tests.

use super::*;

/// alice, in no group, to web-01 (untagged) over SSH as deploy.
const ALICE_TO_WEB_01: Request<'static> = Request {
    user: "alice",
    groups: &[],
    target: "web-01",
    target_tags: &[],
    protocol: "ssh",
    account: "deploy",
};

fn entry(p: Policy) -> Entry {
    Entry {
        policy: Arc::new(p),
        source: Source {
            file: "t.toml".into(),
            line: 1,
        },
    }
}

#[test]
fn stricter_of_two_admissions() {
    use crate::duration::Dur;
    let req = Request {
        target: "web",
        account: "root",
        ..ALICE_TO_WEB_01
    };
    let alice = decide(
        &[p("oncall", |p| {
            p.idle_timeout = Dur::secs(600);
            p.shadow = ShadowMode::Covert;
            p.recording = RecordingMode::Off;
            p.allow_port_forwarding = true;
            p.reconnect.mode = ReconnectMode::Resume;
        })],
        &req,
    )
    .expect("alice");
    let dan = decide(
        &[p("contractors", |p| {
            p.idle_timeout = Dur::secs(60);
            p.max_lifespan = Dur::secs(3600);
            p.shadow = ShadowMode::Visible;
            p.recording = RecordingMode::Required;
        })],
        &req,
    )
    .expect("dan");
    let m = alice.stricter(&dan);
    let s = m.settings();
    assert_eq!(m.policy(), "oncall+contractors");
    assert_eq!(s.idle_timeout, Dur::secs(60));
    assert_eq!(s.max_lifespan, Dur::secs(3600));
    assert_eq!(s.shadow, ShadowMode::Visible);
    assert_eq!(s.recording, RecordingMode::Required);
    assert!(!s.allow_port_forwarding);
    assert_eq!(s.reconnect.mode, ReconnectMode::Strict);
    // Symmetric in the settings.
    assert_eq!(dan.stricter(&alice).settings().idle_timeout, Dur::secs(60));
}

fn p(name: &str, f: impl FnOnce(&mut Policy)) -> Entry {
    let mut p = Policy::named(name);
    f(&mut p);
    entry(p)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// One row of the table: its name, the policies loaded, and `Ok(policy)` or `Err(substring
/// of the denial)` for alice (group sre) reaching web-01.prod (env=prod) over SSH as deploy.
type Case = (&'static str, Vec<Entry>, Result<&'static str, &'static str>);

fn run((name, policies, want): &Case) {
    let groups = s(&["sre"]);
    let tags = vec![("env".to_string(), "prod".to_string())];
    let req = Request {
        user: "alice",
        groups: &groups,
        target: "web-01.prod",
        target_tags: &tags,
        protocol: "ssh",
        account: "deploy",
    };
    match (want, decide(policies, &req)) {
        (Ok(want), Ok(a)) => assert_eq!(a.policy(), *want, "case {name}"),
        (Err(needle), Err(d)) => assert!(d.why.contains(needle), "case {name}: {}", d.why),
        (want, got) => panic!("case {name}: want {want:?}, got {got:?}"),
    }
}

#[test]
fn matching_and_precedence_table() {
    let cases: Vec<Case> = vec![
        ("default deny", vec![], Err("default deny")),
        (
            "group and tag",
            vec![p("sre-prod", |p| {
                p.groups = s(&["sre"]);
                p.target_tags = s(&["env=prod"]);
            })],
            Ok("sre-prod"),
        ),
        (
            "missing tag",
            vec![p("sre-stage", |p| p.target_tags = s(&["env=stage"]))],
            Err("policy sre-stage: target web-01.prod lacks tag env=stage"),
        ),
        (
            "user not listed",
            vec![p("bob-only", |p| p.users = s(&["bob"]))],
            Err("policy bob-only: actor alice (groups sre) is not among"),
        ),
        (
            "wildcard user",
            vec![p("everyone", |p| p.users = s(&["*"]))],
            Ok("everyone"),
        ),
        (
            "account filter",
            vec![p("ro", |p| p.accounts = s(&["readonly"]))],
            Err("account deploy is not among its accounts (readonly)"),
        ),
        (
            "protocol filter",
            vec![p("pg", |p| p.protocols = s(&["postgres"]))],
            Err("protocol ssh is not among its protocols (postgres)"),
        ),
        (
            "user beats group",
            vec![
                p("by-group", |p| p.groups = s(&["sre"])),
                p("by-user", |p| p.users = s(&["alice"])),
            ],
            Ok("by-user"),
        ),
        (
            "named target beats tag",
            vec![
                p("by-tag", |p| p.target_tags = s(&["env=prod"])),
                p("by-name", |p| p.targets = s(&["web-01.prod"])),
            ],
            Ok("by-name"),
        ),
        (
            "actor specificity outranks target specificity",
            vec![
                p("group-named-target", |p| {
                    p.groups = s(&["sre"]);
                    p.targets = s(&["web-01.prod"]);
                }),
                p("user-any-target", |p| p.users = s(&["alice"])),
            ],
            Ok("user-any-target"),
        ),
        (
            "priority beats specificity",
            vec![
                p("specific", |p| p.users = s(&["alice"])),
                p("lockdown", |p| p.priority = 10),
            ],
            Ok("lockdown"),
        ),
        (
            "ties go to the first loaded",
            vec![p("first", |_| {}), p("second", |_| {})],
            Ok("first"),
        ),
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn explanation_covers_every_policy() {
    let policies = vec![
        p("by-group", |p| p.groups = s(&["sre"])),
        p("by-user", |p| p.users = s(&["alice"])),
        p("pg", |p| p.protocols = s(&["postgres"])),
    ];
    let groups = s(&["sre"]);
    let req = Request {
        groups: &groups,
        ..ALICE_TO_WEB_01
    };
    let ex = explain(&policies, &req);
    assert_eq!(ex.admitted_by.as_deref(), Some("by-user"));
    assert!(ex.verdicts[0]
        .why
        .contains("but policy by-user takes precedence"));
    assert!(ex.verdicts[1].why.starts_with("admits: matches user alice"));
    assert!(!ex.verdicts[2].matched);
    assert!(ex.verdicts[2].why.contains("protocol ssh"));
}

#[test]
fn network_resources_are_granted_only_by_policies_that_name_the_protocol() {
    let tags = [("env".to_string(), "prod".to_string())];
    let db = Request {
        target: "billing-db",
        target_tags: &tags,
        protocol: NETWORK,
        account: "-",
        ..ALICE_TO_WEB_01
    };
    // A policy for any protocol and any target opens no firewall.
    let any = p("anything", |_| {});
    assert!(decide(std::slice::from_ref(&any), &db)
        .unwrap_err()
        .why
        .contains("does not grant network resources"));
    // By tag: matched; the account is not asked about.
    let by_tag = p("net-prod", |p| {
        p.protocols = s(&["network"]);
        p.resource_tags = s(&["env=prod"]);
        p.accounts = s(&["deploy"]);
    });
    let a = decide(&[any.clone(), by_tag.clone()], &db).expect("granted by tag");
    assert_eq!(a.policy(), "net-prod");
    // A resource without the tag, or a named list without it: refused, saying why.
    let bare = Request {
        target_tags: &[],
        ..db.clone()
    };
    assert!(decide(std::slice::from_ref(&by_tag), &bare)
        .unwrap_err()
        .why
        .contains("resource billing-db lacks tag env=prod"));
    let named = p("named", |p| {
        p.protocols = s(&["network"]);
        p.resources = s(&["other"]);
    });
    assert!(decide(&[named], &db)
        .unwrap_err()
        .why
        .contains("resource billing-db is not among its resources"));
    // The network policy grants no SSH.
    assert!(decide(&[by_tag], &ALICE_TO_WEB_01).is_err());
}

#[test]
fn network_keys_need_the_network_protocol() {
    let mut p = Policy::named("x");
    p.resources = s(&["db"]);
    assert_eq!(p.validate().unwrap_err().key, "resources");
    p.protocols = s(&["network"]);
    assert!(p.validate().is_ok());
    p.max_session_duration = crate::duration::Dur::secs(3600);
    assert!(p.validate().is_ok());
    p.resource_tags = s(&["env"]);
    assert_eq!(p.validate().unwrap_err().key, "resource_tags");
    p.resource_tags.clear();
    p.mfa = MfaMode::Webauthn;
    assert!(p.validate().is_ok(), "a security key may be asked for");
    p.approval = Some(crate::Approval {
        approvers: s(&["bob"]),
        required: 1,
        timeout: crate::duration::Dur::secs(60),
        valid_for: crate::duration::Dur::secs(60),
    });
    assert!(p.validate().is_ok(), "an approval may be asked for");
}
