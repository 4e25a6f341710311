//! The daemon's TOML configuration: listeners, data directory, users and groups, targets and their
//! accounts, and policies. Loading validates everything up front and names the file, the line and
//! the key of the first problem, so a typo never turns into a surprise at 3 a.m.

mod access;
mod cluster;
mod duration;
mod model;
mod parse;
mod policy_files;
mod roles;
mod sections;
mod tcp;

pub use access::*;
pub use cluster::{ClusterSection, StoreSection};
pub use model::*;
pub use parse::{ca_roots, load, parse};
pub use roles::{perms_of, ApiToken, Perm, Perms, Role};
pub use sections::*;
pub use tcp::*;
