//! Where a client connects from, as an operator reads it in `session show`: `Los Angeles, US`,
//! looked up in a GeoIP2 / GeoLite2 City database the operator configures (`[geoip] database`).
//! Absent by default; a private or unknown address has no location.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};

/// An open City database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl GeoIp {
    pub fn open(path: &Path) -> Result<GeoIp> {
        let reader = maxminddb::Reader::open_readfile(path).with_context(|| {
            format!(
                "cannot read the GeoIP database {} (a GeoIP2 or GeoLite2 City .mmdb file)",
                path.display()
            )
        })?;
        Ok(GeoIp { reader })
    }

    /// `City, CC`, `CC`, or `None` when the database does not know the address.
    pub fn locate(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        let city: maxminddb::geoip2::City<'_> = found.decode().ok()??;
        let place = city.city.names.english;
        let country = city.country.iso_code;
        match (place, country) {
            (Some(p), Some(c)) => Some(format!("{p}, {c}")),
            (None, Some(c)) => Some(c.to_string()),
            (Some(p), None) => Some(p.to_string()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> GeoIp {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/geoip/GeoIP2-City-Test.mmdb");
        GeoIp::open(&p).expect("test database")
    }

    #[test]
    fn maxminds_test_addresses() {
        let g = db();
        assert_eq!(
            g.locate("81.2.69.142".parse().expect("ip")).as_deref(),
            Some("London, GB")
        );
        assert_eq!(
            g.locate("216.160.83.56".parse().expect("ip")).as_deref(),
            Some("Milton, US")
        );
        assert_eq!(g.locate("127.0.0.1".parse().expect("ip")), None);
        assert_eq!(g.locate("10.1.2.3".parse().expect("ip")), None);
    }

    #[test]
    fn a_missing_file_says_what_it_wanted() {
        let e = GeoIp::open(Path::new("/nonexistent/City.mmdb"))
            .err()
            .expect("missing");
        assert!(
            format!("{e:#}").contains("GeoIP2 or GeoLite2 City"),
            "{e:#}"
        );
    }
}
