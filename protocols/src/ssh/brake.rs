//! What the two pumps of a channel pair share: the brake that lets only one of them stop reading,
//! and the set of channels open towards the client.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use russh::ChannelId;

/// At most one pump of a channel pair may stop reading at a time.
///
/// A pump that stops reading makes its russh session loop stop reading its socket (back-pressure),
/// and a stopped loop also stops dispatching the *other* direction's writes and reading the peer's
/// window adjustments. If both pumps stopped, each loop would wait on the other (seen with a 1 GiB
/// echo through `cat` while recording). So a pump whose slack is full takes the brake only if the
/// other pump does not hold it; otherwise it keeps draining past its slack. That excess is bounded
/// in practice by the braking pump's slack, because the braked direction is what feeds it.
#[derive(Default)]
pub(crate) struct Brake(std::sync::atomic::AtomicU8);

const FREE: u8 = 0;

impl Brake {
    /// Hold the brake for `me` (1 or 2); `false` when the other pump holds it.
    pub(super) fn hold(&self, me: u8) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        match self
            .0
            .compare_exchange(FREE, me, AcqRel, std::sync::atomic::Ordering::Acquire)
        {
            Ok(_) => true,
            Err(holder) => holder == me,
        }
    }

    pub(super) fn release(&self, me: u8) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let _ = self.0.compare_exchange(me, FREE, AcqRel, Acquire);
    }
}

/// Session channels currently open towards the client (for goodbye messages).
pub(crate) type OpenChannels = Arc<Mutex<HashSet<ChannelId>>>;
