//! Readiness checks for a starting server: its ports file, a NATS `INFO` greeting on the client
//! port and `200 OK` from `/healthz` on the monitoring port (which covers JetStream recovery
//! after a restart); for a cluster, the meta leader `/jsz` reports.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use crate::Error;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Client and monitoring ports read from the server's ports file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedPorts {
    pub client: u16,
    pub monitor: u16,
}

/// Reads `<dir>/<executable>_<pid>.ports` if the server has written it yet.
pub fn read_ports_file(dir: &Path, pid: u32) -> Result<Option<ReportedPorts>, Error> {
    let suffix = format!("_{pid}.ports");
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let Some(path) = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(&suffix))
    else {
        return Ok(None);
    };
    let text = fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(None); // being written
    }
    parse_ports(&path, &text).map(Some)
}

fn parse_ports(path: &Path, text: &str) -> Result<ReportedPorts, Error> {
    let bad = |reason: &str| Error::PortsFile {
        path: PathBuf::from(path),
        reason: reason.into(),
    };
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let port_of = |key: &str| -> Result<u16, Error> {
        let url = json[key][0]
            .as_str()
            .ok_or_else(|| bad(&format!("no {key} url")))?;
        let port = url.rsplit(':').next().unwrap_or_default();
        port.parse()
            .map_err(|_| bad(&format!("bad {key} url {url}")))
    };
    Ok(ReportedPorts {
        client: port_of("nats")?,
        monitor: port_of("monitoring")?,
    })
}

/// True once the client port greets with `INFO`.
pub async fn client_port_ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await.ok()?;
        Some(&greeting == b"INFO ")
    };
    matches!(timeout(PROBE_TIMEOUT, attempt).await, Ok(Some(true)))
}

/// True once `GET /healthz` on the monitoring port answers `200`. On a cluster's node that
/// includes contact with a JetStream meta leader and every replica it holds being current.
pub async fn healthy(monitor_port: u16) -> bool {
    matches!(http_get(monitor_port, "/healthz").await, Some((200, _)))
}

/// `GET path` on the monitoring port: the status code and the body, or `None` when the server
/// does not answer within a second.
pub async fn http_get(monitor_port: u16, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", monitor_port)).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    timeout(PROBE_TIMEOUT, attempt).await.ok().flatten()
}

/// The `server_name` of the JetStream meta leader as `/jsz` reports it on the monitoring port,
/// or `None` while there is none (or the server is not a cluster's node).
pub async fn meta_leader(monitor_port: u16) -> Option<String> {
    let (status, body) = http_get(monitor_port, "/jsz").await?;
    if status != 200 {
        return None;
    }
    let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
    jsz["meta_cluster"]["leader"]
        .as_str()
        .filter(|leader| !leader.is_empty())
        .map(str::to_owned)
}

/// The last `lines` lines of each existing file, labelled, for error messages.
pub fn tail(files: &[&Path], lines: usize) -> String {
    let mut out = String::new();
    for file in files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        out.push_str(&format!("--- last lines of {} ---\n", file.display()));
        for line in &all[start..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("(the server wrote no log)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_file_is_parsed_into_client_and_monitor_ports() {
        let text = r#"{"nats":["nats://127.0.0.1:36921"],"monitoring":["http://127.0.0.1:46449"]}"#;
        let ports = parse_ports(Path::new("x.ports"), text).unwrap();
        assert_eq!(
            ports,
            ReportedPorts {
                client: 36921,
                monitor: 46449
            }
        );
    }

    #[test]
    fn ports_file_without_monitoring_is_an_error() {
        let text = r#"{"nats":["nats://127.0.0.1:36921"]}"#;
        assert!(parse_ports(Path::new("x.ports"), text).is_err());
    }
}
