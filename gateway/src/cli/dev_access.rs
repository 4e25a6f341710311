//! Dev mode's network-access demo: a resource whose allow-list is a file in the data directory
//! (a `command` backend: the operator's own scripts, here three lines of sh), so `wgctl access
//! start` works without root. A real deployment uses `backend = "nftables"` or its cloud's CLI.

use std::path::Path;

/// The `[access]` settings and the demo resource, for the config.
pub fn config(dir: &Path) -> String {
    let list = toml::Value::String(dir.join("access-allowlist.txt").display().to_string());
    // sh -c SCRIPT LIST RESOURCE ADDRESS SESSION: $0 is the list, $1 $2 $3 what the gateway
    // appends.
    format!(
        "[access]\nmax_duration = \"24h\"\nmax_sessions_per_user = 3\n\n\
         # Network access sessions: `wgctl access start` adds your address to this resource's\n\
         # allow-list (a file here, through scripts; nftables or a cloud in real life).\n\
         [[resources]]\nname = \"bastion.dev\"\ntags = {{ env = \"dev\", kind = \"network\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"grep -qx \\\"$1 $2\\\" \\\"$0\\\" 2>/dev/null || echo \\\"$1 $2\\\" >> \\\"$0\\\"\", {list}]\n\
         revoke = [\"/bin/sh\", \"-c\", \"grep -vx \\\"$1 $2\\\" \\\"$0\\\" > \\\"$0.new\\\"; mv \\\"$0.new\\\" \\\"$0\\\"\", {list}]\n\
         check = [\"/bin/sh\", \"-c\", \"grep -qx \\\"$1 $2\\\" \\\"$0\\\"\", {list}]\n\n"
    )
}

/// What dev mode prints about it.
pub fn help(dir: &Path, d: &str, api: &str, wgctl: &str) -> String {
    format!(
        "Open a network resource for your address (EntryGuard style; bastion.dev's allow-list is\n  \
         {}):\n    \
         WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/alice.token) {wgctl} access start --duration 1h\n    \
         WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/alice.token) {wgctl} access list\n    \
         (then `{wgctl} access stop ID --reason done`, or the console's Access page)\n\n",
        dir.join("access-allowlist.txt").display()
    )
}
