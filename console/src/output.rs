//! What wgctl prints: reports made inert for a terminal, exports as they are, JSON.

use anyhow::Result;
use wardengate_api as api;

/// Write a report to stdout, returning errors (a closed pipe) instead of panicking like
/// `print!`. Every character a terminal would act on, but newline and tab, is shown as an escape:
/// what a report prints (names, reasons, statements) came from users and clients.
pub(crate) fn out(text: &str) -> Result<()> {
    let safe: String = text
        .split_inclusive('\n')
        .map(|line| {
            let (body, nl) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            let body: String = body
                .split('\t')
                .map(|p| api::text::inert(p, usize::MAX).into_owned())
                .collect::<Vec<_>>()
                .join("\t");
            body + nl
        })
        .collect();
    out_raw(&safe)
}

/// Write data to stdout as it is (an export the user asked for).
pub(crate) fn out_raw(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// A report: pretty JSON with `-o json`, else `text` of it (inert for a terminal).
pub(crate) fn report<T: serde::Serialize>(
    v: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        print_json(v)
    } else {
        out(&text(v))
    }
}

/// A message for the person on stderr. A stderr that went away (the terminal closed, `2>&-`) is
/// no reason to stop: the message is dropped, where `eprintln!` would panic.
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}
