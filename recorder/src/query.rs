//! Database query records: one per execution, as the PostgreSQL gateway observed it on the wire.

use serde::{Deserialize, Serialize};

/// One statement execution (a simple Query, an extended-protocol Execute, or a FunctionCall).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// `simple`, `extended` or `function`.
    pub kind: String,
    /// The statement text (cut at the gateway's capture limit; see `truncated`).
    pub statement: String,
    /// Prepared statement name (extended protocol; empty for the unnamed statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    /// Portal name (extended protocol; empty for the unnamed portal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// Bind parameters as text (binary ones as `\x` hex), each cut at the capture limit;
    /// `None` is SQL NULL. Replaced by `"<redacted>"` when the gateway redacts parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Option<String>>,
    /// Unix time (ms) the statement reached the gateway.
    pub started_ms: u64,
    /// Microseconds from the statement reaching the gateway to its result.
    pub duration_us: u64,
    /// The command tag (`SELECT 3`, `INSERT 0 1`, `COPY 10`), several joined by `; ` for a
    /// multi-statement simple query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Rows affected or returned, from the command tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Transaction status after the statement: `idle`, `in transaction` or `failed transaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_status: Option<String>,
    /// The statement or a parameter was cut at the capture limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why an auditor should look at this statement (`password change`: it sets a role's
    /// password, which can take the account away from the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

/// The alert a statement deserves, if any: `ALTER ROLE|USER … PASSWORD …` (what psql's
/// `\password` sends, too) or `CREATE ROLE|USER … PASSWORD …`. A heuristic on the text: it
/// also catches such statements inside a multi-statement query or a `DO` block.
pub fn alert_for(statement: &str) -> Option<String> {
    // Most statements never say "password": a scan without allocating settles them.
    if !statement
        .as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password"))
    {
        return None;
    }
    let words: Vec<String> = statement
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let role_change = words.windows(2).any(|w| {
        matches!(w[0].as_str(), "alter" | "create") && matches!(w[1].as_str(), "role" | "user")
    });
    (role_change && words.iter().any(|w| w == "password")).then(|| "password change".to_string())
}

impl QueryRecord {
    /// One human-readable line: `[00:00:01.234] 1.2 ms  SELECT 3  idle  select * from t`.
    pub fn line(&self, t_us: u64) -> String {
        let when = crate::time::clock(std::time::Duration::from_micros(t_us), true);
        let dur = if self.duration_us >= 1_000_000 {
            format!("{:.2} s", self.duration_us as f64 / 1e6)
        } else {
            format!("{:.1} ms", self.duration_us as f64 / 1e3)
        };
        let result = match (&self.sqlstate, &self.tag) {
            (Some(code), _) => {
                format!("ERROR {code} {}", self.error.as_deref().unwrap_or_default())
            }
            (None, Some(tag)) => tag.clone(),
            (None, None) => "-".into(),
        };
        let alert = self
            .alert
            .as_ref()
            .map(|a| format!("ALERT ({a})  "))
            .unwrap_or_default();
        let mut line = format!(
            "[{when}] {dur:>9}  {result}  ({})  {alert}{}",
            self.tx_status.as_deref().unwrap_or("?"),
            one_line(&self.statement)
        );
        if !self.params.is_empty() {
            let p: Vec<String> = self
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Some(v) => format!("${}={}", i + 1, one_line(v)),
                    None => format!("${}=NULL", i + 1),
                })
                .collect();
            line.push_str(&format!("  [{}]", p.join(", ")));
        }
        line
    }
}

/// Whitespace runs (newlines included) collapsed to one space, so a statement is one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The CSV header of [`csv_row`].
pub const CSV_HEADER: &str =
    "t,started_ms,duration_us,kind,statement_name,portal,statement,params,tag,rows,sqlstate,error,tx_status";

/// One record as a CSV row (RFC 4180 quoting; parameters as a JSON array).
pub fn csv_row(t_us: u64, q: &QueryRecord) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let params = if q.params.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&q.params).unwrap_or_default()
    };
    [
        format!("{:.6}", t_us as f64 / 1e6),
        q.started_ms.to_string(),
        q.duration_us.to_string(),
        q.kind.clone(),
        q.statement_name.clone().unwrap_or_default(),
        q.portal.clone().unwrap_or_default(),
        q.statement.clone(),
        params,
        q.tag.clone().unwrap_or_default(),
        q.rows.map(|r| r.to_string()).unwrap_or_default(),
        q.sqlstate.clone().unwrap_or_default(),
        q.error.clone().unwrap_or_default(),
        q.tx_status.clone().unwrap_or_default(),
    ]
    .iter()
    .map(|f| field(f))
    .collect::<Vec<_>>()
    .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_csv() {
        let q = QueryRecord {
            kind: "extended".into(),
            statement: "select *\n from t where a = $1".into(),
            params: vec![Some("x,\"y\"".into()), None],
            duration_us: 1500,
            tag: Some("SELECT 2".into()),
            rows: Some(2),
            tx_status: Some("idle".into()),
            ..Default::default()
        };
        let l = q.line(3_723_004_000);
        assert!(
            l.starts_with(
                "[01:02:03.004]    1.5 ms  SELECT 2  (idle)  select * from t where a = $1"
            ),
            "{l}"
        );
        assert!(l.ends_with("[$1=x,\"y\", $2=NULL]"), "{l}");
        let row = csv_row(1_000_000, &q);
        assert_eq!(
            row,
            "1.000000,0,1500,extended,,,\"select *\n from t where a = $1\",\"[\"\"x,\\\"\"y\\\"\"\"\",null]\",SELECT 2,2,,,idle"
        );
    }
}

#[cfg(test)]
mod alert_tests {
    use super::alert_for;

    #[test]
    fn password_changes_are_flagged() {
        for s in [
            "ALTER ROLE billing_ro PASSWORD 'x'",
            "alter user billing_ro with encrypted password 'SCRAM-SHA-256$4096:...'",
            "select 1; ALTER\n  ROLE \"billing_ro\" PASSWORD 'y'",
            "CREATE USER mallory PASSWORD 'z'",
            "DO $$ BEGIN EXECUTE 'alter role billing_ro password ''p'''; END $$",
        ] {
            assert_eq!(alert_for(s).as_deref(), Some("password change"), "{s}");
        }
        for s in [
            "select password from users",
            "ALTER ROLE billing_ro SET search_path = x",
            "alter table role_passwords add column x int",
        ] {
            assert_eq!(alert_for(s), None, "{s}");
        }
    }
}
