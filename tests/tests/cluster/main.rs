//! Several gateway processes on one real PostgreSQL store: the session list, terminate and the
//! audit chain span the cluster; the concurrency limits hold across gateways; a gateway killed
//! with `kill -9` is declared lost by a peer and its slots come back; a database restart keeps
//! live sessions running and admission fails closed meanwhile.

mod approvals;
mod lifecycle;
mod routing;

pub use wardengate_tests::cluster::{cluster, cluster_with, Cluster};
