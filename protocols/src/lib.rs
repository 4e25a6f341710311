//! Protocol gateways: each module terminates the client leg of one protocol, opens the target leg
//! with credentials injected from the gateway's vault, and relays between the two.
//!
//! The gateway crate owns every decision and every side effect (store, audit, API); a protocol
//! module asks for them through a small trait (for SSH: [`ssh::SshBroker`]) and reports back through
//! the session contract in [`session`]. Protocol code never touches the store or the API.
#![forbid(unsafe_code)]

pub mod clock;
pub mod denial;
pub mod error;
pub mod listener;
pub mod postgres;
pub mod rdp;
pub mod session;
pub mod shadow;
pub mod ssh;
pub mod supervisor;
pub mod tap;
pub mod tcp;
pub mod timers;
pub mod tls;
