//! The Wardengate daemon as a library: configuration, identities, the credential vault, the
//! session registry and store, the audit log, the REST API.
//!
//! It wires the protocol gateways (`wardengate-protocols`) to decisions (`wardengate-policy`) and
//! never parses protocol bytes itself. The `wardengate` binary (`src/cli/`) is the
//! command line and `wardengate dev`, which alone uses the throwaway peers of `wardengate-dev`:
//! the daemon library does not.
#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod api;
pub mod audit;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod geoip;
pub mod guard;
pub mod http;
pub mod identity;
pub mod keys;
pub mod logging;
pub mod passwords;
pub mod perms;
pub mod recording;
pub mod registry;
pub mod server;
pub mod store;
pub mod tcp;
pub mod tls;
pub mod util;
pub mod vault;
