//! Reading the NATS monitoring port: a minimal HTTP/1.1 GET over a TCP connection (the
//! monitoring port serves plain JSON, with a length or in chunks), and the `/varz` and `/jsz`
//! answers of every node [`crate::lag`] needs, found the way KEDA finds them.
//!
//! Given several monitoring URLs (one per node), each is asked. Given one URL of a clustered
//! server, the other nodes are found as KEDA finds them ([`peers`]): from the client URLs the
//! cluster advertises (each host on the given URL's port), or, when none are advertised, from
//! the route URLs (`<node>.<given host>`, a Kubernetes headless service).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lag::{self, Jsz, NodeReport, Varz};

/// The most a monitoring answer may hold.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// A monitoring endpoint: `http://host:port` with an optional path prefix. Written without a
/// scheme (`host:port`, as KEDA's `natsServerMonitoringEndpoint`) it is plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorUrl {
    pub host: String,
    pub port: u16,
    /// Prefix before `/jsz`, without a trailing slash (usually empty).
    pub prefix: String,
}

impl FromStr for MonitorUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(format!(
                    "{text}: https is not supported; reach the monitoring port over http (e.g. \
                     `kubectl port-forward`)"
                ));
            }
            Some((scheme, _)) => return Err(format!("{text}: unsupported scheme {scheme}")),
            None => text,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| {
            format!("{text}: expected http://HOST:PORT, e.g. http://127.0.0.1:8222")
        })?;
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("{text}: bad port {port:?}"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("{text}: no host"));
        }
        Ok(MonitorUrl {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

impl fmt::Display for MonitorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
        }
    }
}

impl MonitorUrl {
    /// The same endpoint on another host (and the same port and prefix).
    fn on_host(&self, host: &str) -> MonitorUrl {
        MonitorUrl {
            host: host.to_owned(),
            ..self.clone()
        }
    }
}

/// Sends `GET <prefix><path>` and returns the body of a 200 answer.
pub async fn get(url: &MonitorUrl, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let target = format!("{}{path}", url.prefix);
    let exchange = async {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
        let host = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ridectl/{}\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut response)
            .await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {timeout:?}"))?
        .map_err(anyhow::Error::from)?;
    if response.len() as u64 > MAX_RESPONSE {
        bail!("the answer is larger than {MAX_RESPONSE} bytes");
    }
    let (status, body) = parse_response(&response)?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(200).collect();
        bail!("HTTP {status}: {text}");
    }
    Ok(body)
}

/// GETs `path` and parses the body as JSON.
pub async fn get_json<T: DeserializeOwned>(
    url: &MonitorUrl,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let body = get(url, path, timeout)
        .await
        .with_context(|| format!("could not read {url}{path}"))?;
    serde_json::from_slice(&body).with_context(|| format!("{url}{path} did not answer JSON"))
}

/// Splits an HTTP/1.x response into its status and its body (decoded when chunked).
pub fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response ({} bytes)", response.len()))?;
    let head = std::str::from_utf8(&response[..end]).context("HTTP headers are not UTF-8")?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().context("bad Content-Length")?);
        }
    }
    let body = if chunked {
        decode_chunked(body)?
    } else if let Some(length) = length {
        body.get(..length)
            .ok_or_else(|| anyhow!("the body ended after {} of {length} bytes", body.len()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Decodes a chunked body (chunk extensions and trailers ignored).
fn decode_chunked(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = std::str::from_utf8(&body[..line_end]).context("bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunk of {size} bytes"))?;
        out.extend_from_slice(chunk);
        body = body
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or_else(|| anyhow!("chunk not followed by CRLF"))?;
    }
}

/// The other nodes of `url`'s cluster as KEDA finds them from its `/varz`: each advertised
/// client URL's host on `url`'s port; without advertised URLs, `<node>.<host>` for each route
/// URL, `<node>` being the first label of the route's host (a headless service's pod name).
pub fn peers(url: &MonitorUrl, varz: &Varz) -> Vec<MonitorUrl> {
    let host_of = |address: &str| -> Option<String> {
        let address = address.split_once("://").map_or(address, |(_, rest)| rest);
        split_host_port(address).map(|(host, _)| host.to_owned())
    };
    let mut found: Vec<MonitorUrl> = Vec::new();
    let mut add = |candidate: MonitorUrl| {
        if candidate != *url && !found.contains(&candidate) {
            found.push(candidate);
        }
    };
    if varz.connect_urls.is_empty() {
        for route in &varz.cluster.urls {
            if let Some(host) = host_of(route) {
                let node = host.split('.').next().unwrap_or_default();
                if !node.is_empty() {
                    add(url.on_host(&format!("{node}.{}", url.host)));
                }
            }
        }
    } else {
        for client in &varz.connect_urls {
            if let Some(host) = host_of(client) {
                add(url.on_host(&host));
            }
        }
    }
    found
}

/// The nodes' answers, and the nodes that could not be read.
#[derive(Debug, Default)]
pub struct Gathered {
    pub reports: Vec<NodeReport>,
    pub unreachable: Vec<(MonitorUrl, anyhow::Error)>,
}

/// Asks every node in `urls` for its `/varz` and KEDA's `/jsz` for `account`; given one URL
/// of a clustered server, asks its peers too ([`peers`]). Fails only when no node answers.
pub async fn gather(
    urls: &[MonitorUrl],
    account: &str,
    timeout: Duration,
) -> anyhow::Result<Gathered> {
    let mut gathered = Gathered::default();
    let mut first_varz = None;
    for url in urls {
        match node(url, account, timeout).await {
            Ok((report, varz)) => {
                first_varz.get_or_insert(varz);
                gathered.reports.push(report);
            }
            Err(error) => gathered.unreachable.push((url.clone(), error)),
        }
    }
    if gathered.reports.is_empty() {
        let error = match gathered.unreachable.pop() {
            Some((_, error)) => error,
            None => anyhow!("no monitoring URL given"),
        };
        return Err(error);
    }
    if let ([url], Some(varz)) = (urls, first_varz)
        && lag::clustered(&gathered.reports)
    {
        for peer in peers(url, &varz) {
            match node(&peer, account, timeout).await {
                Ok((report, _)) => {
                    if !gathered
                        .reports
                        .iter()
                        .any(|r| r.server_name == report.server_name)
                    {
                        gathered.reports.push(report);
                    }
                }
                Err(error) => gathered.unreachable.push((peer, error)),
            }
        }
    }
    Ok(gathered)
}

/// One node's `/varz` and `/jsz`.
async fn node(
    url: &MonitorUrl,
    account: &str,
    timeout: Duration,
) -> anyhow::Result<(NodeReport, Varz)> {
    let varz: Varz = get_json(url, "/varz", timeout).await?;
    let jsz: Jsz = get_json(url, &lag::jsz_path(account), timeout).await?;
    let report = NodeReport {
        url: url.to_string(),
        server_name: varz.server_name.clone(),
        jsz,
    };
    Ok((report, varz))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER_N2_VARZ: &str = include_str!("../tests/fixtures/monitoring/cluster-n2-varz.json");

    fn url(text: &str) -> MonitorUrl {
        text.parse().unwrap()
    }

    #[test]
    fn monitoring_urls_are_read_with_or_without_a_scheme() {
        assert_eq!(
            url("http://127.0.0.1:8222").to_string(),
            "http://127.0.0.1:8222"
        );
        assert_eq!(
            url("nats.ns.svc:8222/").to_string(),
            "http://nats.ns.svc:8222"
        );
        assert_eq!(url("http://proxy:80/nats/").prefix, "/nats");
        assert_eq!(url("http://[::1]:8222").host, "::1");
        assert_eq!(url("http://[::1]:8222").to_string(), "http://[::1]:8222");
        assert_eq!(url("http://monitor").port, 80);
        let https = "https://nats:8222".parse::<MonitorUrl>().unwrap_err();
        assert!(https.contains("https is not supported"), "{https}");
        assert!("http://nats:port".parse::<MonitorUrl>().is_err());
        assert!("nats://nats:4222".parse::<MonitorUrl>().is_err());
    }

    #[test]
    fn bodies_with_a_length_or_in_chunks_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      Content-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, b"{\"a\":1}".to_vec())
        );
        let closed = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_response(closed).unwrap(), (404, b"nope".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn peers_come_from_advertised_client_urls_on_the_monitoring_port() {
        let varz: Varz = serde_json::from_str(CLUSTER_N2_VARZ).unwrap();
        // Captured on one machine: every advertised URL is 127.0.0.1, i.e. the given node.
        assert!(peers(&url("http://127.0.0.1:28232"), &varz).is_empty());
        let advertised = Varz {
            connect_urls: vec!["10.0.0.1:4222".into(), "10.0.0.2:4222".into()],
            ..varz.clone()
        };
        let found = peers(&url("http://10.0.0.1:8222"), &advertised);
        assert_eq!(found, vec![url("http://10.0.0.2:8222")]);
    }

    #[test]
    fn without_advertised_urls_peers_are_pods_of_the_headless_service() {
        let varz = Varz {
            server_name: "nats-0".into(),
            connect_urls: Vec::new(),
            cluster: lag::VarzCluster {
                urls: vec![
                    "nats-0.nats-headless.ns.svc.cluster.local:6222".into(),
                    "nats-1.nats-headless.ns.svc.cluster.local:6222".into(),
                    "nats-2.nats-headless.ns.svc.cluster.local:6222".into(),
                ],
            },
        };
        let found = peers(&url("nats-headless.ns.svc:8222"), &varz);
        let hosts: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            hosts,
            [
                "http://nats-0.nats-headless.ns.svc:8222",
                "http://nats-1.nats-headless.ns.svc:8222",
                "http://nats-2.nats-headless.ns.svc:8222",
            ]
        );
    }
}
