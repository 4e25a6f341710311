//! Dev mode's brokered-TCP demo: a throwaway redis-server behind the target `cache.dev`
//! (`protocol = "tcp"`), the `[tcp]` listener, and how to reach it with `wgctl connect`.

use std::path::Path;

use wardengate_dev::services::{self, Service};

/// The demo redis-server, when redis-server is installed (`scripts/dev` installs it); without
/// it dev mode runs without the TCP demo and says why.
pub fn start(dir: &Path) -> Option<Service> {
    services::which("redis-server")?;
    match services::redis(&dir.join("redis"), 0) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("wardengate dev: no TCP demo target: {e:#}");
            None
        }
    }
}

/// The `[tcp]` listener and the `cache.dev` target, for the config (empty without redis).
pub fn config(redis: Option<&Service>, tcp_port: u16) -> String {
    let Some(r) = redis else {
        return String::new();
    };
    format!(
        "[tcp]\nlisten = \"127.0.0.1:{tcp_port}\"\n\n\
         # Any TCP service, Boundary style: `wgctl connect redis cache.dev`. No account: the client\n\
         # brings its own credentials; connections per session are unlimited here (default 1).\n\
         [[targets]]\nname = \"cache.dev\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\
         session_connection_limit = -1\nsession_max_seconds = 28800\n\
         tags = {{ env = \"dev\", kind = \"tcp\" }}\n\n",
        r.address()
    )
}

/// What dev mode prints about it.
pub fn help(redis: Option<&Service>, d: &str, api: &str, wgctl: &str) -> String {
    match redis {
        None => "No TCP demo: redis-server is not installed (scripts/dev installs it).\n\n".into(),
        Some(r) => format!(
            "Reach any TCP service (Boundary style; cache.dev = redis-server on {addr}):\n    \
             export WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/alice.token)\n    \
             {wgctl} connect redis cache.dev -- INCR visits\n    \
             {wgctl} target authorize cache.dev    (then, elsewhere: {wgctl} proxy --authz TOKEN)\n    \
             {wgctl} session show SESSION_ID    (its States: pending, active, terminated)\n\n",
            addr = r.address()
        ),
    }
}
