//! Printing results: aligned tables for people, JSON for scripts (chosen by `--output`, or
//! automatically when stdout is not a terminal), colours only on a terminal without `NO_COLOR`,
//! diagnostics and hints on stderr.

use std::io::{IsTerminal, Write};

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::cli::OutputFormat;

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: OutputFormat,
    color: bool,
}

/// Colours used for states and markers.
#[derive(Debug, Clone, Copy)]
pub enum Paint {
    Green,
    Yellow,
    Red,
    Dim,
    Bold,
}

impl Out {
    /// Resolves the format: the flag wins, else table on a terminal and JSON otherwise.
    pub fn detect(flag: Option<OutputFormat>) -> Out {
        let terminal = std::io::stdout().is_terminal();
        let format = flag.unwrap_or(if terminal {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        });
        Out {
            format,
            color: terminal && format == OutputFormat::Table && colors_allowed(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints a JSON document on one line.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(value)?;
        text.push('\n');
        self.raw(text.as_bytes())
    }

    /// Writes bytes to stdout; a reader that went away (`| head`) is not an error.
    pub fn raw(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Prints a line of text on stdout.
    pub fn line(&self, text: impl AsRef<str>) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not an error worth reporting.
        let _ = writeln!(stdout, "{}", text.as_ref());
        let _ = stdout.flush();
    }

    /// Colours `text` when colours are on.
    pub fn paint(&self, paint: Paint, text: &str) -> String {
        paint_if(self.color, paint, text)
    }

    /// Prints a table.
    pub fn table(&self, table: &Table) {
        self.line(table.render().trim_end_matches('\n'));
    }
}

fn colors_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint_if(on: bool, paint: Paint, text: &str) -> String {
    if !on {
        return text.to_owned();
    }
    let code = match paint {
        Paint::Green => "32",
        Paint::Yellow => "33",
        Paint::Red => "31",
        Paint::Dim => "2",
        Paint::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A note for the operator on stderr, e.g. what was published.
pub fn note(text: impl AsRef<str>) {
    eprintln!("{}", text.as_ref());
}

/// A warning on stderr.
pub fn warn(text: impl AsRef<str>) {
    let on = std::io::stderr().is_terminal() && colors_allowed();
    eprintln!(
        "{} {}",
        paint_if(on, Paint::Yellow, "warning:"),
        text.as_ref()
    );
}

/// Prints an error with its whole chain, then its hints, on stderr.
pub fn report_error(error: &anyhow::Error, hints: &[String]) {
    let on = std::io::stderr().is_terminal() && colors_allowed();
    let text = crate::exit::chain_text(error);
    eprintln!("{} {text}", paint_if(on, Paint::Red, "error:"));
    for hint in hints {
        eprintln!("{} {hint}", paint_if(on, Paint::Bold, "hint:"));
    }
}

/// Columns of text, padded to line up; cells may carry colour codes, which do not count
/// towards the width.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(headers: I) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| visible_len(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(visible_len(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - visible_len(cell) + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Length without ANSI colour sequences.
fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// `2025-11-25 20:34:01.123Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.to_string())
}

/// `20:34:01.123`, for timelines.
pub fn format_clock(t: OffsetDateTime) -> String {
    let format = format_description!("[hour]:[minute]:[second].[subsecond digits:3]");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.to_string())
}

/// RFC 3339, for JSON.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Bytes as `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_ignore_colour_codes() {
        let mut table = Table::new(["NAME", "STATE"]);
        table.row(["r_1", "\x1b[32mcompleted\x1b[0m"]);
        table.row(["r_22", "confirmed"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME  STATE");
        assert_eq!(lines[2], "r_22  confirmed");
        assert!(lines[1].starts_with("r_1   \x1b[32m"));
    }

    #[test]
    fn amounts_and_sizes_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        assert_eq!(format_time(t), "2023-11-14 22:13:20.123Z");
        assert_eq!(format_clock(t), "22:13:20.123");
    }
}
