//! What every handler is given: the gateway, the admin token's hash, the browser links.

use std::sync::Arc;

use super::tickets::Tickets;
use crate::broker::Gateway;

#[derive(Clone)]
pub struct ApiState {
    pub gw: Arc<Gateway>,
    /// sha256 of the admin token; compared in constant time.
    pub token_hash: [u8; 32],
    /// Browser shadow links not opened yet.
    pub tickets: Tickets,
}
