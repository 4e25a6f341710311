//! SSH through a real gateway to a real sshd, with real OpenSSH clients: the data path, refusals,
//! channel requests, reconnect, handoff, shadowing, concurrency limits, idle and lifespan.

mod channel_requests;
mod concurrency;
mod handoff;
mod idle;
mod idle_lifespan;
mod reconnect;
mod refusals;
mod relay;
mod shadow;
