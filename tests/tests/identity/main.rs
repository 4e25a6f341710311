//! Identity end to end with real peers: headless Chromium's DevTools virtual authenticator
//! (CTAP2, user verification) as the person's key on the gateway's `/mfa` page, OpenSSH in tmux
//! for the step-up prompt, psql for a protocol that cannot prompt, `wgctl` for the links.

mod approvals;
mod console;
mod console_access;
mod console_page;
mod console_sessions;
mod console_tcp;
mod keys;
mod operators;

use std::time::Duration;

use serde_json::{json, Value};
use wardengate_dev::sshd::Sshd;
use wardengate_tests::browser::Chromium;
use wardengate_tests::*;

pub(crate) const T: Duration = Duration::from_secs(30);
pub(crate) const ALICE_TOKEN: &str = "alice-own-api-token-for-the-identity-tests";

/// The page's outcome: `{state, text}` once it is no longer working.
pub(crate) const STATUS: &str = "(() => { const s = document.getElementById('status'); \
    return s ? {state: s.dataset.state, text: s.textContent} : null; })()";

/// A browser with a virtual security key plugged in.
pub(crate) struct Browser {
    pub(crate) chromium: Chromium,
    pub(crate) authenticator: String,
    profile: std::path::PathBuf,
    shots: usize,
}

impl Browser {
    pub(crate) fn start(env: &TestEnv, name: &str) -> Browser {
        let profile = env.path(name);
        let mut chromium = Chromium::open("about:blank", &profile);
        chromium.call("WebAuthn.enable", json!({}));
        let authenticator = Self::plug(&mut chromium);
        Browser {
            chromium,
            authenticator,
            profile,
            shots: 0,
        }
    }

    /// A new virtual key (USB, CTAP2, with a PIN that is always right, touched at once).
    pub(crate) fn plug(chromium: &mut Chromium) -> String {
        let r = chromium.call(
            "WebAuthn.addVirtualAuthenticator",
            json!({"options": {"protocol": "ctap2", "transport": "usb", "hasResidentKey": false,
                   "hasUserVerification": true, "isUserVerified": true,
                   "automaticPresenceSimulation": true}}),
        );
        r["authenticatorId"]
            .as_str()
            .expect("an authenticator id")
            .to_string()
    }

    /// Open `url` and wait for the page to finish: `(state, text)`.
    pub(crate) fn complete(&mut self, url: &str) -> (String, String) {
        self.chromium.navigate(url);
        // Page.navigate does not wait for the page: wait until it is the key page.
        self.chromium
            .eval_until("location.pathname", T, |v| v == &json!("/mfa"));
        let v = self.chromium.eval_until(STATUS, T, |v| {
            v["state"].as_str().is_some_and(|s| s != "working")
        });
        let out = (
            v["state"].as_str().unwrap_or_default().to_string(),
            v["text"].as_str().unwrap_or_default().to_string(),
        );
        assert!(
            !out.0.is_empty(),
            "the page never finished: {v}\nchromium: {}",
            Chromium::log(&self.profile)
        );
        // To look at the page: WARDENGATE_SCREENSHOTS=DIR keeps a picture of each outcome.
        if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
            let name = format!("mfa-{}-{}.png", out.0, self.shots);
            self.shots += 1;
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(name),
                self.chromium.screenshot(),
            );
        }
        out
    }

    pub(crate) fn credentials(&mut self) -> Vec<Value> {
        let r = self.chromium.call(
            "WebAuthn.getCredentials",
            json!({"authenticatorId": self.authenticator}),
        );
        r["credentials"].as_array().cloned().unwrap_or_default()
    }
}

/// A gateway where alice has her own API token and `policy` (a TOML `[[policies]]` block).
pub(crate) fn gateway<'a>(env: &'a TestEnv, sshd: &Sshd, policy: &str) -> GatewayBuilder<'a> {
    env.gateway()
        .target("web-01.test", sshd)
        .user_token(ALICE_TOKEN)
        .policies(policy)
}

pub(crate) const STEP_UP: &str = "\n[[policies]]\nname = \"sre-prod\"\ngroups = [\"sre\"]\n\
    target_tags = [\"env=test\"]\nmfa = \"webauthn\"\n";

/// `wgctl` as alice herself.
pub(crate) fn alice_wgctl(gw: &GatewayProc, args: &[&str]) -> std::process::Output {
    run(
        gw.wgctl().env("WARDENGATE_TOKEN", ALICE_TOKEN).args(args),
        T,
    )
}

/// The link `wgctl mfa enroll|prove` printed (JSON).
pub(crate) fn link_of(out: &std::process::Output) -> String {
    assert_success(out, "wgctl mfa");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["url"].as_str().expect("a url").to_string()
}

/// alice enrols her browser's key as "YubiKey 5C".
pub(crate) fn enrol(gw: &GatewayProc, browser: &mut Browser) {
    let url = link_of(&alice_wgctl(
        gw,
        &["mfa", "enroll", "--name", "YubiKey 5C", "-o", "json"],
    ));
    assert!(url.contains("/mfa#ticket="), "{url}");
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    assert!(text.contains("'YubiKey 5C' enrolled for alice"), "{text}");
}

pub(crate) const CAROL_TOKEN: &str = "carol-own-api-token-an-approver";
pub(crate) const BOB_TOKEN: &str = "bob-own-api-token-another-approver";
pub(crate) const DAN_TOKEN: &str = "dan-own-api-token-not-an-approver";

pub(crate) fn people(env: &TestEnv) -> String {
    // All of them, alice too, may decide approvals ([[roles]] approval.decide); which requests
    // is each policy's approvers.
    let mut toml = "[[roles]]\nname = \"approvers\"\n\
        members = [\"group:sre-leads\", \"dan\", \"alice\"]\ncan = [\"approval.decide\"]\n\n"
        .to_string();
    let people = [
        ("carol", "sre-leads", CAROL_TOKEN),
        ("bob", "sre-leads", BOB_TOKEN),
        ("dan", "sre", DAN_TOKEN),
    ];
    for (name, group, token) in people {
        toml.push_str(&format!(
            "[[users]]\nname = \"{name}\"\ngroups = [\"{group}\"]\npublic_keys = [\"{}\"]\n\
             api_token_sha256 = \"{}\"\n\n",
            env.alice_pub,
            sha256_hex(token.as_bytes())
        ));
    }
    toml
}

pub(crate) fn wgctl_as(gw: &GatewayProc, token: &str, args: &[&str]) -> std::process::Output {
    run(gw.wgctl().env("WARDENGATE_TOKEN", token).args(args), T)
}

/// The `req_…` id in a text.
pub(crate) fn request_id(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("no request id in: {text}"))
        .to_string()
}
