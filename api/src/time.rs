//! How durations are shown, everywhere: [`human`] for people (banners, tables, logs) and
//! [`clock`] for a position in a session (`HH:MM:SS`, players, transcripts, exports). The
//! notation durations are *written* in (`90s`, `15m`) is `wardengate_policy::duration`.

use std::time::Duration;

/// `90s`, `15m`, `2m 30s`, `8h`, `1h 5m`, `2d`, `2d 3h`; rounded to the nearest second, so a
/// deadline polled a few milliseconds late still reads as the configured value.
pub fn human(d: Duration) -> String {
    let s = ((d.as_millis() + 500) / 1000) as u64;
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=119 => format!("{s}s"),
        120..=7199 if s.is_multiple_of(60) => format!("{}m", s / 60),
        120..=7199 => format!("{}m {}s", s / 60, s % 60),
        7200..=172_799 if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        7200..=172_799 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{}d", s / 86_400),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// [`human`] of whole seconds.
pub fn human_secs(secs: u64) -> String {
    human(Duration::from_secs(secs))
}

/// `HH:MM:SS`, or `HH:MM:SS.mmm` with `millis`: an offset into a session.
pub fn clock(d: Duration, millis: bool) -> String {
    let s = d.as_secs();
    let hms = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    if millis {
        format!("{hms}.{:03}", d.subsec_millis())
    } else {
        hms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_the_largest_units() {
        let h = |s| human_secs(s);
        assert_eq!(h(5), "5s");
        assert_eq!(h(90), "90s");
        assert_eq!(h(150), "2m 30s");
        assert_eq!(h(900), "15m");
        assert_eq!(h(8 * 3600), "8h");
        assert_eq!(h(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(h(2 * 86_400), "2d");
        assert_eq!(h(2 * 86_400 + 3 * 3600 + 5), "2d 3h");
        assert_eq!(human(Duration::from_millis(2995)), "3s");
        assert_eq!(human(Duration::from_millis(20)), "20ms");
    }

    #[test]
    fn offsets_are_clock_times() {
        assert_eq!(clock(Duration::from_secs(3661), false), "01:01:01");
        assert_eq!(clock(Duration::from_millis(1234), true), "00:00:01.234");
        assert_eq!(clock(Duration::from_secs(100 * 3600), false), "100:00:00");
    }
}
