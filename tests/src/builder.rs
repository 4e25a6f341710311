//! The gateway's configuration for a test: users, targets (SSH and PostgreSQL), policies, and the
//! vault filled with the targets' secrets before the gateway starts.

use std::process::Command;
use std::time::Duration;

use wardengate_dev::sshd::Sshd;

use crate::{assert_success, bin, run_with_input, GatewayProc, TestEnv};

pub struct GatewayBuilder<'a> {
    pub(crate) env: &'a TestEnv,
    pub(crate) targets: Vec<(String, String, String, String)>,
    /// PostgreSQL targets: (name, address, role, password, extra TOML lines).
    pub(crate) pg_targets: Vec<(String, String, String, String, String)>,
    pub(crate) postgres: Option<String>,
    /// RDP targets: (name, address, account, password).
    pub(crate) rdp_targets: Vec<(String, String, String, String)>,
    pub(crate) extra: String,
    pub(crate) gateway_lines: String,
    pub(crate) api_lines: String,
    pub(crate) security_lines: String,
    /// `ssh.auth_rejection_time` (short in tests, so refusals do not slow the suite).
    pub(crate) rejection_time: String,
    pub(crate) ssh_lines: String,
    pub(crate) policies: Option<String>,
    pub(crate) alice_token: Option<String>,
    /// The gateway's name (`[gateway] name`); it also names its data directory and config file
    /// when several gateways share one test (`gw-test`: `gw/` and `gateway.toml`).
    pub(crate) name: String,
}

/// The password every test user gets.
pub const ALICE_PASSWORD: &str = "correct horse battery staple";

impl<'a> GatewayBuilder<'a> {
    /// The test's environment (its keys, to name them in more configuration).
    pub fn env(&self) -> &'a TestEnv {
        self.env
    }

    /// A target served by `sshd` with the tag env=test; its account is the sshd's user.
    pub fn target(self, name: &str, sshd: &Sshd) -> Self {
        let addr = sshd.address();
        let user = sshd.user.clone();
        self.target_at(name, &addr, &user)
    }

    pub fn target_at(mut self, name: &str, address: &str, account: &str) -> Self {
        self.targets.push((
            name.into(),
            address.into(),
            account.into(),
            "env=test".into(),
        ));
        self
    }

    /// A PostgreSQL target (tag env=test) whose account `role` logs in with `password`, kept in
    /// the vault only. Turns the PostgreSQL front on.
    pub fn pg_target(self, name: &str, address: &str, role: &str, password: &str) -> Self {
        self.pg_target_with(name, address, role, password, "")
    }

    /// [`pg_target`](Self::pg_target) with more lines for its `[[targets]]` table
    /// (`auth_methods = ["md5"]`).
    pub fn pg_target_with(
        mut self,
        name: &str,
        address: &str,
        role: &str,
        password: &str,
        lines: &str,
    ) -> Self {
        self.pg_targets.push((
            name.into(),
            address.into(),
            role.into(),
            password.into(),
            lines.into(),
        ));
        self.postgres.get_or_insert_with(String::new);
        self
    }

    /// Lines added to the `[postgres]` section (`require_tls = true`); turns the front on.
    /// An RDP target (tag env=test) whose account logs in with `password`, kept in the vault
    /// only. Turns the RDP front on.
    pub fn rdp_target(mut self, name: &str, address: &str, account: &str, password: &str) -> Self {
        self.rdp_targets
            .push((name.into(), address.into(), account.into(), password.into()));
        self
    }

    pub fn postgres_lines(mut self, toml: &str) -> Self {
        push_line(self.postgres.get_or_insert_with(String::new), toml);
        self
    }

    /// Raw TOML appended to the config (more users, targets, groups).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    /// Lines added to the `[gateway]` section (`max_active = 2`, `policy_files = [...]`).
    pub fn gateway_lines(mut self, toml: &str) -> Self {
        push_line(&mut self.gateway_lines, toml);
        self
    }

    /// Give alice a personal API token (`users.api_token_sha256`).
    pub fn user_token(mut self, token: &str) -> Self {
        self.alice_token = Some(crate::sha256_hex(token.as_bytes()));
        self
    }

    /// Serve the API over TLS (its self-signed certificate generated at first start), not the
    /// tests' default plain HTTP on loopback.
    pub fn api_tls(mut self) -> Self {
        self.api_lines = self.api_lines.replace("plain_http = true\n", "");
        self
    }

    /// Lines added to the `[api]` section (`handoff_window = "2s"`).
    pub fn api_lines(mut self, toml: &str) -> Self {
        push_line(&mut self.api_lines, toml);
        self
    }

    /// The SSH front's `auth_rejection_time` (default 10ms in tests).
    pub fn ssh_rejection_time(mut self, t: &str) -> Self {
        self.rejection_time = t.to_string();
        self
    }

    /// Lines added to the `[ssh]` section (`ciphers = [...]`).
    pub fn ssh_lines(mut self, toml: &str) -> Self {
        push_line(&mut self.ssh_lines, toml);
        self
    }

    /// Lines added to the `[security]` section (`failures_before_backoff = 3`).
    pub fn security_lines(mut self, toml: &str) -> Self {
        push_line(&mut self.security_lines, toml);
        self
    }

    /// Replace the default policy (group `sre`, env=test, port forwarding allowed to 127.0.0.1,
    /// where the tests' servers listen).
    pub fn policies(mut self, toml: &str) -> Self {
        self.policies = Some(toml.into());
        self
    }

    /// Name the gateway (several in one test: each its own data directory and config file).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// The data directory [`start`](Self::start) will use (to place shared keys in it first).
    pub fn data_dir(&self) -> std::path::PathBuf {
        match self.name.as_str() {
            "gw-test" => self.env.dir.path().join("gw"),
            name => self.env.dir.path().join(name),
        }
    }

    pub fn start(self) -> GatewayProc {
        let env = self.env;
        let data = self.data_dir();
        std::fs::create_dir_all(&data).expect("data dir");
        let hash = wardengate_gateway::passwords::hash(ALICE_PASSWORD).expect("hash");
        let scram = wardengate_protocols::postgres::Verifier::generate(ALICE_PASSWORD);
        let postgres = match &self.postgres {
            Some(lines) => format!(
                "[postgres]\nlisten = \"127.0.0.1:0\"\nauth_rejection_time = \"10ms\"\nconnect_timeout = \"5s\"\n{lines}\n"
            ),
            None => String::new(),
        };
        let rdp = if self.rdp_targets.is_empty() {
            String::new()
        } else {
            "[rdp]\nlisten = \"127.0.0.1:0\"\nauth_rejection_time = \"10ms\"\nconnect_timeout = \"10s\"\n\n".to_string()
        };
        let nt_hash = hex::encode(wardengate_gateway::passwords::nt_hash(ALICE_PASSWORD));
        let mut cfg = format!(
            "[gateway]\nname = \"{name}\"\ndata_dir = \"{data}\"\n{gateway_lines}\n[ssh]\nlisten = \"127.0.0.1:0\"\n\
             auth_rejection_time = \"{rejection}\"\nconnect_timeout = \"5s\"\n{ssh_lines}\n{postgres}{rdp}[api]\nlisten = \"127.0.0.1:0\"\n{api_lines}\n[security]\n{security_lines}\n\
             [[users]]\nname = \"alice\"\ngroups = [\"sre\"]\npublic_keys = [\"{key}\"]\npassword_hash = \"{hash}\"\n\
             scram_sha_256 = \"{scram}\"\nnt_hash = \"{nt_hash}\"\n{token}\n",
            data = data.display(),
            name = self.name,
            key = env.alice_pub,
            gateway_lines = self.gateway_lines,
            api_lines = self.api_lines,
            security_lines = self.security_lines,
            rejection = self.rejection_time,
            ssh_lines = self.ssh_lines,
            token = self
                .alice_token
                .as_ref()
                .map(|t| format!("api_token_sha256 = \"{t}\"\n"))
                .unwrap_or_default(),
        );
        for (name, addr, role, _, lines) in &self.pg_targets {
            cfg.push_str(&format!(
                "[[targets]]\nname = \"{name}\"\nprotocol = \"postgres\"\naddress = \"{addr}\"\ntags = {{ env = \"test\" }}\n\
                 accounts = [{{ name = \"{role}\", secret = \"{name}/{role}\" }}]\n{lines}\n\n"
            ));
        }
        for (name, addr, account, _) in &self.rdp_targets {
            cfg.push_str(&format!(
                "[[targets]]\nname = \"{name}\"\nprotocol = \"rdp\"\naddress = \"{addr}\"\ntags = {{ env = \"test\" }}\n\
                 accounts = [{{ name = \"{account}\", secret = \"{name}/{account}\" }}]\n\n"
            ));
        }
        for (name, addr, account, tag) in &self.targets {
            let (k, v) = tag.split_once('=').expect("tag");
            cfg.push_str(&format!(
                "[[targets]]\nname = \"{name}\"\naddress = \"{addr}\"\ntags = {{ {k} = \"{v}\" }}\n\
                 accounts = [{{ name = \"{account}\", secret = \"{name}/{account}\" }}]\n\n"
            ));
        }
        cfg.push_str(&self.extra);
        cfg.push_str(self.policies.as_deref().unwrap_or(
            "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\nallow_port_forwarding = true\nforward_to = [\"127.0.0.1\"]\n",
        ));
        let config = match self.name.as_str() {
            "gw-test" => env.dir.path().join("gateway.toml"),
            name => env.dir.path().join(format!("{name}.toml")),
        };
        // It holds alice's password hash, SCRAM verifier and NT hash: the gateway refuses to
        // start on a config other users can read.
        write_private(&config, &cfg);
        let key_file = env.path("account_key");
        std::fs::write(&key_file, &env.account_key_pem).expect("key file");
        for (name, _, account, _) in &self.targets {
            let out = Command::new(bin("wardengate"))
                .args(["vault", "--config"])
                .arg(&config)
                .args(["set", &format!("{name}/{account}"), "--private-key-file"])
                .arg(&key_file)
                .output()
                .expect("wardengate vault set");
            assert_success(&out, "vault set");
        }
        let password_secrets = self
            .pg_targets
            .iter()
            .map(|(name, _, role, password, _)| (name, role, password))
            .chain(self.rdp_targets.iter().map(|(n, _, a, p)| (n, a, p)));
        for (name, role, password) in password_secrets {
            let out = run_with_input(
                Command::new(bin("wardengate"))
                    .args(["vault", "--config"])
                    .arg(&config)
                    .args(["set", &format!("{name}/{role}"), "--password-stdin"]),
                Some(password.as_bytes().to_vec()),
                Duration::from_secs(30),
            );
            assert_success(&out, "vault set");
        }
        // The key exists only in the vault from here on.
        std::fs::remove_file(&key_file).expect("remove key file");
        GatewayProc::spawn(config, data)
    }
}

/// Add `toml` as a line of a section's text (the `*_lines` setters).
fn push_line(section: &mut String, toml: &str) {
    section.push_str(toml);
    section.push('\n');
}

/// Write `text` to `path`, readable by its owner only.
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
