//! Durations as policies write them: `<count><unit>` with unit `ms`, `s`, `m`, `h`, `d`, `w`,
//! `M` (a month, 30 days) or `Y` (a year, 365 days), Kibana's units (`90s`, `15m`, `8h`, `6M`).
//! A bare `0` means zero. Anything else is an error that says what is accepted.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A policy duration; serialises back to the same notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parse `<count>[ms|s|m|h|d|w|M|Y]`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (count, unit) = t.split_at(split);
    let bad = || {
        format!("'{s}' is not a duration; write <count><unit> with unit ms, s, m, h, d, w, M (30 days) or Y (365 days) (e.g. 90s, 15m, 8h)")
    };
    let n: u64 = count.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        "M" => 30 * 86_400_000,
        "Y" => 365 * 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}' is too long"))
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0");
        }
        for (unit, per) in [
            ("w", 604_800_000u64),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        for (text, ms) in [
            ("250ms", 250u64),
            ("90s", 90_000),
            ("15m", 900_000),
            ("8h", 28_800_000),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1M", 2_592_000_000),
            ("2Y", 63_072_000_000),
            ("0", 0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "15", "m", "1.5h", "-1s", "10 minutes", "5x"] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("<count><unit>"), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["250ms", "90s", "15m", "8h", "2d", "1w", "0", "1500ms"] {
            let d = Dur(parse(text).expect(text));
            assert_eq!(d.to_string(), text);
        }
    }
}
