//! Reading the pieces of frames the query log needs, with bounds-checked reads only.

use super::super::wire::Rd;

/// `s` cut to at most `max` bytes on a character boundary, and whether it was cut.
pub(super) fn cut(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_string(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// Rows from a command tag: the last number (`INSERT 0 5` → 5, `SELECT 3` → 3).
pub(super) fn rows_of(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next().and_then(|n| n.parse().ok())
}

pub(super) fn tx_name(status: u8) -> &'static str {
    match status {
        b'T' => "in transaction",
        b'E' => "failed transaction",
        _ => "idle",
    }
}

/// Parse message: name, query, parameter types.
pub(super) fn parse_parse(body: &[u8]) -> Option<(String, String, Vec<u32>)> {
    let mut r = Rd(body);
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.u16()? as usize;
    let types = (0..n)
        .map(|_| r.i32().map(|t| t as u32))
        .collect::<Option<_>>()?;
    Some((name, query, types))
}

/// Bind message: portal, statement, parameter formats, parameter values.
pub(super) type BindParts<'a> = (String, String, Vec<u16>, Vec<Option<&'a [u8]>>);

pub(super) fn parse_bind(body: &[u8]) -> Option<BindParts<'_>> {
    let mut r = Rd(body);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nf = r.u16()? as usize;
    let formats = (0..nf).map(|_| r.u16()).collect::<Option<_>>()?;
    let np = r.u16()? as usize;
    let mut params = Vec::with_capacity(np.min(1024));
    for _ in 0..np {
        let len = r.i32()?;
        params.push(if len < 0 {
            None
        } else {
            Some(r.take(len as usize)?)
        });
    }
    Some((portal, statement, formats, params))
}

/// A binary parameter of a common type as text (`41`, `true`, a UUID); `None` for the rest.
pub(super) fn binary_value(oid: u32, v: &[u8]) -> Option<String> {
    Some(match (oid, v.len()) {
        (16, 1) => (v[0] != 0).to_string(),
        (21, 2) => i16::from_be_bytes(v.try_into().ok()?).to_string(),
        (23 | 26, 4) => i32::from_be_bytes(v.try_into().ok()?).to_string(),
        (20, 8) => i64::from_be_bytes(v.try_into().ok()?).to_string(),
        (700, 4) => f32::from_be_bytes(v.try_into().ok()?).to_string(),
        (701, 8) => f64::from_be_bytes(v.try_into().ok()?).to_string(),
        (25 | 1043 | 1042 | 19, _) => String::from_utf8(v.to_vec()).ok()?,
        (2950, 16) => {
            let h = hex::encode(v);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        _ => return None,
    })
}
