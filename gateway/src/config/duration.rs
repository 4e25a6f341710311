//! serde helper: durations written as policies write them (`500ms`, `10s`, `5m`; see
//! `wardengate_policy::duration`).

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    wardengate_policy::duration::parse(&s).map_err(serde::de::Error::custom)
}

/// The same for an optional setting.
pub mod option {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
