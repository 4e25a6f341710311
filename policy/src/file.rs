//! Policy files: TOML with one `[[policy]]` table per policy. Errors name the file, the line and
//! the key, for syntax and for meaning alike.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::schema::Policy;

/// Where a policy was defined; serialised as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    pub line: usize,
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A loaded policy with its origin.
#[derive(Debug, Clone)]
pub struct Entry {
    pub policy: Arc<Policy>,
    pub source: Source,
}

/// A policy file that cannot be used, and exactly where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    /// Dotted key, e.g. `policy.sre-prod.idle_timeout`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of `key` in the table whose header starts at `span` (up to the next table header),
/// or the header's line.
fn key_line(text: &str, span: std::ops::Range<usize>, key: &str) -> usize {
    let start = span.start.min(text.len());
    let mut offset = start;
    for (i, l) in text[start..].split_inclusive('\n').enumerate() {
        let t = l.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        if t.starts_with(key) && t[key.len()..].trim_start().starts_with(['=', '.']) {
            return line_at(text, offset);
        }
        offset += l.len();
    }
    line_at(text, start)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    policy: Vec<Spanned<Policy>>,
}

/// Parse a policy file (`[[policy]]` tables). `file` names it in errors.
pub fn parse_file(text: &str, file: &str) -> Result<Vec<Entry>, PolicyError> {
    let parsed: PolicyFile = toml::from_str(text).map_err(|e| PolicyError {
        file: file.into(),
        line: e.span().map(|s| line_at(text, s.start)).unwrap_or(1),
        key: String::new(),
        message: e.message().trim().to_string(),
    })?;
    if parsed.policy.is_empty() {
        return Err(PolicyError {
            file: file.into(),
            line: 1,
            key: String::new(),
            message: "defines no policy; add [[policy]] tables".into(),
        });
    }
    entries(parsed.policy, text, file, "policy")
}

/// Validate spanned policies (from a policy file, or `[[policies]]` in the gateway config).
pub fn entries(
    spanned: Vec<Spanned<Policy>>,
    text: &str,
    file: &str,
    table: &str,
) -> Result<Vec<Entry>, PolicyError> {
    let mut out: Vec<Entry> = Vec::new();
    for s in spanned {
        let span = s.span();
        let policy = s.into_inner();
        let err = |key: &str, message: String| PolicyError {
            file: file.into(),
            line: key_line(text, span.clone(), key),
            key: format!("{table}.{}.{key}", policy.name),
            message,
        };
        policy.validate().map_err(|p| err(p.key, p.message))?;
        out.push(Entry {
            source: Source {
                file: file.into(),
                line: key_line(text, span.clone(), "name"),
            },
            policy: Arc::new(policy),
        });
    }
    Ok(out)
}

/// Check a whole set (several files): names are unique.
pub fn check_set(all: &[Entry]) -> Result<(), PolicyError> {
    for (i, e) in all.iter().enumerate() {
        if let Some(first) = all[..i].iter().find(|o| o.policy.name == e.policy.name) {
            return Err(PolicyError {
                file: e.source.file.clone(),
                line: e.source.line,
                key: format!("policy.{}.name", e.policy.name),
                message: format!("is already defined at {}", first.source),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ReconnectMode;

    const GOOD: &str = r#"
# SREs on production
[[policy]]
name = "sre-prod"
groups = ["sre"]
target_tags = ["env=prod"]
idle_timeout = "10m"
reconnect = { mode = "resume", grace = "2m" }
concurrency = { max = 5 }

[[policy]]
name = "dba"
users = ["dana"]
protocols = ["postgres"]
"#;

    #[test]
    fn parses_with_sources_and_settings() {
        let all = parse_file(GOOD, "prod.toml").expect("valid");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].source.to_string(), "prod.toml:4");
        assert_eq!(all[0].policy.idle_timeout.to_string(), "10m");
        assert_eq!(all[0].policy.reconnect.mode, ReconnectMode::Resume);
        assert_eq!(all[0].policy.concurrency.max, Some(5));
        assert_eq!(all[1].source.line, 12);
        assert_eq!(all[1].policy.idle_timeout.to_string(), "15m");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "[[policy]]\nname = \"a\"\nidle_timeout = \"15 minutes\"\n",
                3,
                "",
                "<count><unit>",
            ),
            (
                "[[policy]]\nname = \"a\"\nidel_timeout = \"15m\"\n",
                3,
                "",
                "idel_timeout",
            ),
            (
                "[[policy]]\nname = \"a\"\n\ntarget_tags = [\"prod\"]\n",
                4,
                "policy.a.target_tags",
                "key=value",
            ),
            (
                "[[policy]]\nname = \"a\"\nprotocols = [\"telnet\"]\n",
                3,
                "policy.a.protocols",
                "telnet",
            ),
            (
                "[[policy]]\nname = \"a\"\nmax_lifespan = \"1h\"\nlifespan_warning = \"2h\"\n",
                4,
                "policy.a.lifespan_warning",
                "shorter than max_lifespan (1h)",
            ),
            (
                "[[policy]]\nname = \"a\"\nreconnect = { mode = \"sometimes\" }\n",
                3,
                "",
                "sometimes",
            ),
            (
                "[[policy]]\nname = \"a\"\nconcurrency = { max = 0 }\n",
                3,
                "policy.a.concurrency",
                "admit nothing",
            ),
            ("# nothing here\n", 1, "", "defines no policy"),
        ];
        for (text, line, key, needle) in cases {
            let e = parse_file(text, "p.toml").expect_err(text);
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{text}: {e}");
            assert!(e.to_string().contains(needle), "{e}");
            assert!(
                e.to_string().starts_with(&format!("p.toml line {line}")),
                "{e}"
            );
        }
    }

    #[test]
    fn duplicate_names_across_files_are_refused() {
        let mut all = parse_file(GOOD, "a.toml").expect("a");
        all.extend(parse_file("[[policy]]\nname = \"dba\"\n", "b.toml").expect("b"));
        let e = check_set(&all).expect_err("duplicate");
        assert_eq!(
            e.to_string(),
            "b.toml line 2: policy.dba.name: is already defined at a.toml:12"
        );
    }
}
