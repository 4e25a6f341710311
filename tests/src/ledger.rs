//! A `command` resource for the access-session tests: its scripts keep an allow-list file
//! (apply appends "RESOURCE ADDRESS", revoke empties it), and the file is what it lets in.

use std::path::PathBuf;

pub struct Ledger {
    pub path: PathBuf,
}

impl Ledger {
    /// An empty allow-list at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Ledger {
        let path = path.into();
        std::fs::write(&path, "").expect("ledger");
        Ledger { path }
    }

    /// The `[[resources]]` entry `name`, tagged `tag` (`("env", "prod")`), with `more` lines
    /// (`shared = true\n`).
    pub fn resource(&self, name: &str, tag: (&str, &str), more: &str) -> String {
        format!(
            "[[resources]]\nname = \"{name}\"\ntags = {{ {} = \"{}\" }}\nbackend = \"command\"\n{more}\
             apply = [\"/bin/sh\", \"-c\", \"echo \\\"$1 $2\\\" >> {l}\", \"apply\"]\n\
             revoke = [\"/bin/sh\", \"-c\", \": > {l}\", \"revoke\"]\n\n",
            tag.0,
            tag.1,
            l = self.path.display()
        )
    }

    /// What it lets in now.
    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.path).expect("ledger")
    }
}
