//! Operator roles (`[[roles]]`): named sets of permissions given to users and groups; and
//! named API tokens for automation (`[[api_tokens]]`), each with its own permissions.

use serde::Deserialize;

/// `[[api_tokens]] name = "ci-deployer", sha256 = "…", can = ["session.read"]`: a token for
/// automation, kept as its sha256 (`wardengate new-token` prints a token and its hash); it acts
/// as `token:NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    /// sha256 of the token, 64 hex digits.
    pub sha256: String,
    #[serde(default)]
    pub can: Vec<String>,
}

impl ApiToken {
    /// Its permissions (names already checked at load).
    pub fn perms(&self) -> Perms {
        self.can
            .iter()
            .filter_map(|c| Perm::parse(c))
            .fold(Perms::default(), Perms::with)
    }
}

/// `[[roles]] name = "auditors", members = ["group:audit", "erin"], can = ["audit.read"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    /// Users by name, or `group:NAME`.
    #[serde(default)]
    pub members: Vec<String>,
    /// Permissions (see [`Perm::name`]).
    #[serde(default)]
    pub can: Vec<String>,
    /// Its members sign in to the console with a security key as well as their password
    /// (people with a key enrolled always do).
    #[serde(default)]
    pub require_mfa: bool,
}

/// One permission (`[[roles]] can = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    SessionRead,
    SessionTerminate,
    SessionShadow,
    SessionHandoff,
    ApprovalDecide,
    RecordingRead,
    AuditRead,
    PolicyReload,
    UserAdmin,
}

impl Perm {
    pub const ALL: [Perm; 9] = [
        Perm::SessionRead,
        Perm::SessionTerminate,
        Perm::SessionShadow,
        Perm::SessionHandoff,
        Perm::ApprovalDecide,
        Perm::RecordingRead,
        Perm::AuditRead,
        Perm::PolicyReload,
        Perm::UserAdmin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Perm::SessionRead => "session.read",
            Perm::SessionTerminate => "session.terminate",
            Perm::SessionShadow => "session.shadow",
            Perm::SessionHandoff => "session.handoff",
            Perm::ApprovalDecide => "approval.decide",
            Perm::RecordingRead => "recording.read",
            Perm::AuditRead => "audit.read",
            Perm::PolicyReload => "policy.reload",
            Perm::UserAdmin => "user.admin",
        }
    }

    pub fn parse(s: &str) -> Option<Perm> {
        Perm::ALL.into_iter().find(|p| p.name() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms(u16);

impl Perms {
    pub fn all() -> Perms {
        Perms(Perm::ALL.iter().fold(0, |b, p| b | p.bit()))
    }
    pub fn with(self, p: Perm) -> Perms {
        Perms(self.0 | p.bit())
    }
    pub fn has(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }
    pub fn names(self) -> Vec<&'static str> {
        Perm::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .map(Perm::name)
            .collect()
    }
}

/// What `user` (member of `groups`) may do by `roles` (names already checked at load).
pub fn perms_of(user: &str, groups: &[String], roles: &[Role]) -> Perms {
    roles
        .iter()
        .filter(|r| {
            r.members.iter().any(|m| match m.strip_prefix("group:") {
                Some(g) => groups.iter().any(|x| x == g),
                None => m == user,
            })
        })
        .flat_map(|r| r.can.iter().filter_map(|c| Perm::parse(c)))
        .fold(Perms::default(), Perms::with)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_hold_what_was_added() {
        for p in Perm::ALL {
            assert_eq!(Perm::parse(p.name()), Some(p));
        }
        assert_eq!(Perm::parse("session.delete"), None);
        let s = Perms::default().with(Perm::AuditRead);
        assert!(s.has(Perm::AuditRead) && !s.has(Perm::UserAdmin));
        assert_eq!(Perms::all().names().len(), 9);
    }

    #[test]
    fn a_person_holds_the_roles_that_name_them_or_their_groups() {
        let roles = vec![
            Role {
                name: "auditors".into(),
                members: vec!["group:audit".into()],
                can: vec!["audit.read".into(), "recording.read".into()],
                require_mfa: false,
            },
            Role {
                name: "leads".into(),
                members: vec!["carol".into()],
                can: vec!["approval.decide".into()],
                require_mfa: true,
            },
        ];
        let erin = perms_of("erin", &["audit".into()], &roles);
        assert_eq!(erin.names(), vec!["recording.read", "audit.read"]);
        let carol = perms_of("carol", &[], &roles);
        assert!(carol.has(Perm::ApprovalDecide) && !carol.has(Perm::AuditRead));
        assert_eq!(perms_of("dan", &["sre".into()], &roles), Perms::default());
    }
}
