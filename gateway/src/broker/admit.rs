//! The one admission contract ([`Broker`]) for each protocol: what an admitted session
//! connects to. Admission itself is the same for every protocol
//! (`Gateway::admit_session`); what differs is the secret each target leg takes (a password or,
//! for SSH, a private key) and the shape of the target handed to the protocol.

use std::sync::Arc;

use wardengate_protocols::postgres::{PgTarget, TargetTls};
use wardengate_protocols::rdp::RdpTarget;
use wardengate_protocols::session::{Broker, ClientInfo, Denial, Login, Plan};
use wardengate_protocols::ssh::{Admission, Credential, SshTarget};

use super::Gateway;
use crate::admission::{resolve, Granted};
use crate::config::{Account, Target};
use crate::vault::{Secret, SecretKind};
use wardengate_api::Protocol;

/// The vault's secret as a password; `kind` names the account ("a PostgreSQL account") when the
/// vault holds a private key instead.
fn password(
    kind: &'static str,
) -> impl FnOnce(Secret, &Account, &Target) -> Result<String, String> {
    move |secret, account, target| match secret.kind {
        SecretKind::Password => Ok(secret.value),
        SecretKind::PrivateKey => Err(format!(
            "wardengate: the vault holds a private key for {}@{}, but {kind} needs a password",
            account.name, target.name
        )),
    }
}

/// The vault's secret as an SSH credential: a password or an OpenSSH private key.
fn ssh_credential(
    secret: Secret,
    account: &Account,
    target: &Target,
) -> Result<Credential, String> {
    match secret.kind {
        SecretKind::Password => Ok(Credential::Password(secret.value)),
        SecretKind::PrivateKey => russh::keys::PrivateKey::from_openssh(secret.value.trim())
            .map(|k| Credential::PrivateKey(Arc::new(k)))
            .map_err(|e| {
                format!(
                    "wardengate: the vault key for {}@{} is unreadable: {e}",
                    account.name, target.name
                )
            }),
    }
}

impl Broker<Admission> for Gateway {
    /// A handed-off session to take over (`ssh dan:sess_…@gateway`), a paused session to
    /// resume, or a new one.
    async fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<Admission, Denial> {
        if login.target.starts_with("sess_") && login.account.is_none() {
            if let Ok(Some(owner)) = self.runs_elsewhere(&login.target).await {
                // The session and its terminal are on that gateway: so is the takeover.
                return Err(Denial::new(
                    "takeover_refused",
                    format!(
                        "wardengate: session {} runs on gateway {owner}: take it over through \
                         that gateway's SSH address",
                        login.target
                    ),
                ));
            }
            return self.takeover(login, method, client);
        }
        let cfg = self.cfg();
        if let Ok(r) = resolve(&cfg, login, Protocol::Ssh) {
            if let Some(t) = self.resume_ticket(&cfg, &r) {
                return Ok(Admission::Resume(t));
            }
        }
        let g = self
            .admit_session(login, method, client, Protocol::Ssh, ssh_credential)
            .await?;
        Ok(Admission::New(plan(g, |t, account, credential| {
            SshTarget {
                username: account.username().to_string(),
                name: t.name,
                address: t.address,
                credential,
            }
        })))
    }
}

impl Broker<Plan<PgTarget>> for Gateway {
    async fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<Plan<PgTarget>, Denial> {
        let cfg = self.cfg();
        let g = self
            .admit_session(
                login,
                method,
                client,
                Protocol::Postgres,
                password("a PostgreSQL account"),
            )
            .await?;
        let tls = cfg
            .pg_tls
            .get(&g.target.name)
            .cloned()
            .unwrap_or(TargetTls::Disable);
        Ok(plan(g, |t, account, password| PgTarget {
            username: account.username().to_string(),
            name: t.name,
            address: t.address,
            password,
            database: t.database,
            tls,
            tls_server_name: t.tls_server_name,
            auth_methods: t
                .auth_methods
                .unwrap_or_else(|| vec!["scram-sha-256".to_string()]),
        }))
    }
}

impl Broker<Plan<RdpTarget>> for Gateway {
    async fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<Plan<RdpTarget>, Denial> {
        let g = self
            .admit_session(
                login,
                method,
                client,
                Protocol::Rdp,
                password("a Windows account"),
            )
            .await?;
        Ok(plan(g, |t, account, password| RdpTarget {
            username: account.username().to_string(),
            name: t.name,
            address: t.address,
            password,
        }))
    }
}

/// The protocol's plan from a granted admission: `target` builds what its target leg needs.
fn plan<C, T>(g: Granted<C>, target: impl FnOnce(Target, &Account, C) -> T) -> Plan<T> {
    Plan {
        admitted: g.admitted,
        link: g.link,
        target: target(g.target, &g.account, g.credential),
    }
}
