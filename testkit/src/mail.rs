//! [`SmtpServer`]: a real SMTP server for tests, aiosmtpd (Debian's `python3-aiosmtpd`) on a
//! free loopback port, storing every message it accepts in a temporary maildir. It can be
//! stopped (killed, like an outage) and restarted on the same port and maildir; the port lies
//! where no outgoing connection takes it meanwhile ([`crate::ports`]).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{error::Error, ports};

/// How long the server may take to greet its first client.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) aiosmtpd with its maildir.
#[derive(Debug)]
pub struct SmtpServer {
    python: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The Python that has aiosmtpd: `RIDESAGA_PYTHON`, else Debian's `/usr/bin/python3` (where
/// `python3-aiosmtpd` installs it), else `python3` on the `PATH`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("RIDESAGA_PYTHON") {
        return PathBuf::from(python);
    }
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("python3")
    }
}

impl SmtpServer {
    /// Starts aiosmtpd on a free port with an empty maildir, and waits for its greeting.
    pub async fn start() -> Result<SmtpServer, Error> {
        let dir = tempfile::tempdir().map_err(Error::io("create the maildir's directory"))?;
        let mut server = SmtpServer {
            python: python(),
            port: ports::free_one()?,
            dir,
            child: None,
        };
        let mut attempt = 1;
        loop {
            match server.restart().await {
                Ok(()) => return Ok(server),
                Err(error) if attempt < ports::START_ATTEMPTS && ports::taken(&error) => {
                    attempt += 1;
                    server.port = ports::free_one()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The maildir it delivers into.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Kills the server: clients are refused until [`SmtpServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and maildir (a running one is stopped first).
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("aiosmtpd.log"))
            .map_err(Error::io("create aiosmtpd's log"))?;
        let log_err = log.try_clone().map_err(Error::io("open aiosmtpd's log"))?;
        let child = Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(Error::io(format!(
                "start aiosmtpd with {} (install python3-aiosmtpd, or set RIDESAGA_PYTHON)",
                self.python.display()
            )))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.greets() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Io {
                    action: format!("start aiosmtpd ({status})"),
                    source: std::io::Error::other(self.log_tail()),
                });
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Io {
                    action: format!("wait for aiosmtpd on port {}", self.port),
                    source: std::io::Error::other(self.log_tail()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the server answers with its `220` greeting.
    fn greets(&self) -> bool {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220")
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("aiosmtpd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Every message in the maildir, raw (headers and body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((modified, entry.path()));
            }
        }
        files.sort();
        files.iter().filter_map(|(_, path)| read(path)).collect()
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of header `name` in a raw message (the first one; unfolded), if it has one.
pub fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\n\n").next().unwrap_or_default();
    let mut lines = head.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.eq_ignore_ascii_case(name) {
            let mut value = value.trim().to_owned();
            while let Some(next) = lines.peek()
                && next.starts_with([' ', '\t'])
            {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            return Some(value);
        }
    }
    None
}

/// The body of a raw message: what follows its headers, with line breaks as `\n`, decoded
/// when its `Content-Transfer-Encoding` is `quoted-printable`.
pub fn body(message: &str) -> String {
    let message = message.replace("\r\n", "\n");
    let body = message
        .split_once("\n\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    let quoted = header(&message, "Content-Transfer-Encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
    if quoted { unquote(&body) } else { body }
}

/// Decodes quoted-printable: `=` at a line's end joins it to the next, `=XX` is a byte.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_unfolded_and_quoted_printable_bodies_decoded() {
        let raw = "Subject: a\r\n long one\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                   Fare 12.00 (base=\r\n 2.50) =E2=82=AC\r\n";
        assert_eq!(header(raw, "subject").as_deref(), Some("a long one"));
        assert_eq!(body(raw), "Fare 12.00 (base 2.50) €\n");
        assert_eq!(header(raw, "To"), None);
    }
}
