//! The gateway's log: `RUST_LOG` as usual, except for libraries whose verbose output carries
//! secrets. sspi's instrumented functions print credential buffers at DEBUG (the target account's
//! password, as UTF-16 bytes, while the gateway writes it to an RDP target), russh prints
//! decrypted packets at TRACE, and tokio-postgres prints statement parameters at DEBUG. Those are capped whatever `RUST_LOG` asks for: a log handed to a
//! vendor or pasted into a ticket must never hold a credential.

use tracing::{Level, Metadata};
use tracing_subscriber::prelude::*;

/// The most verbose level a target may log at, when it is capped.
fn cap(target: &str) -> Option<Level> {
    let crate_name = target.split("::").next().unwrap_or(target);
    match crate_name {
        "sspi" | "picky" | "picky_krb" | "picky_asn1_der" => Some(Level::WARN),
        // tokio-postgres prints every statement's parameters at DEBUG: the cluster store's
        // vault ciphertexts, token hashes and session texts.
        "russh" | "russh_keys" | "ironrdp_connector" | "ironrdp_acceptor" | "tokio_postgres" => {
            Some(Level::INFO)
        }
        _ => None,
    }
}

/// Whether an event or span may be logged at all.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    cap(meta.target()).is_none_or(|max| *meta.level() <= max)
}

/// Install the global subscriber: `RUST_LOG` (default `info,russh=warn`) to stderr, secrets capped.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(allowed))
        .with(filter)
        // Colours only for a person at a terminal: a log file or a journal gets plain text.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::cap;
    use tracing::Level;

    #[test]
    fn secret_bearing_libraries_are_capped_and_ours_are_not() {
        assert_eq!(cap("sspi::credssp::ts_request"), Some(Level::WARN));
        assert_eq!(cap("sspi"), Some(Level::WARN));
        assert_eq!(cap("russh::client"), Some(Level::INFO));
        assert_eq!(cap("wardengate_protocols::rdp"), None);
        // A name that merely starts like a capped crate is not capped.
        assert_eq!(cap("sspi_like::x"), None);
        // tracing orders levels by verbosity: DEBUG is more verbose than WARN.
        assert!(Level::DEBUG > Level::WARN);
    }
}
