//! What every handler is given: the gateway, the admin token's hash, the browser links.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::tickets::Tickets;
use crate::broker::Gateway;

#[derive(Clone)]
pub struct ApiState {
    pub gw: Arc<Gateway>,
    /// sha256 of the admin token; compared in constant time.
    pub token_hash: [u8; 32],
    /// Browser shadow links not opened yet.
    pub tickets: Tickets,
    /// The console's live views, computed once per tick for every stream showing the same one.
    pub views: Views,
}

/// Pages of the console's live stream by view (who may see what, and the filters): when it was
/// computed and what it was. Each view has its own async lock, held while it is computed, so
/// streams that find it stale at once wait for one computation instead of each making one.
#[derive(Clone, Default)]
pub struct Views(pub(crate) Arc<Mutex<HashMap<String, View>>>);

/// One view's last page.
pub(crate) type View = Arc<tokio::sync::Mutex<Option<(Instant, Arc<String>)>>>;
