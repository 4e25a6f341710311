//! Several gateway processes on one real PostgreSQL store: the session list, terminate and the
//! audit chain span the cluster; the concurrency limits hold across gateways; a gateway killed
//! with `kill -9` is declared lost by a peer and its slots come back; a database restart keeps
//! live sessions running and admission fails closed meanwhile; recordings go to a real
//! S3-compatible object store and survive its outages and a gateway's death.

mod access;
mod approvals;
mod desktop;
mod handoff;
mod lifecycle;
mod objects;
mod routing;

pub use wardengate_tests::cluster::{cluster, cluster_with, Cluster};
