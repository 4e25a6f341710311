//! PostgreSQL through a real gateway to a real cluster, with psql, pgbench and tokio-postgres:
//! the relay, operator control, refusals, TLS towards the target, and the throwaway cluster
//! itself (the target of these tests and of `wardengate dev`).

mod cluster;
mod control;
mod refusals;
mod relay;
mod target_tls;
