//! The SMS channel: a provider's HTTP API in the shape the common ones share. One request per
//! notification: `POST` of the form `To`, `From`, `Body` to the configured endpoint, with HTTP
//! basic authentication (the account and its token) and the id of the notification's
//! `evt.notification.sent` in the provider's idempotency header, so every attempt at one
//! notification is one message at the provider. The answer is JSON with the message's id at
//! the provider (`sid`, `id` or `message_id`), which is recorded with the notification.
//!
//! A 2xx answer is a delivery; 408, 429 and 5xx answers, and no answer, are worth another
//! attempt; any other 4xx refuses the notification for good (a number the provider cannot
//! reach, a bad sender), with the provider's words.
//!
//! The client is a few dozen lines of HTTP/1.1 over tokio (and tokio-rustls for `https`): one
//! request per connection (`Connection: close`), the answer read to its end (at most 1 MiB),
//! a `chunked` body decoded. An HTTP crate would bring a connection pool, redirects and a
//! dependency tree this one request does not need.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::channel::{Channel, ChannelError, Delivery};
use crate::config::{ConfigError, Secret, Settings};

/// The most bytes of an answer read.
const MAX_ANSWER: usize = 1 << 20;

/// An endpoint's parts: `http[s]://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, from its `/`.
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("the URL must start with https:// (or http:// for a local server)".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "credentials go in RIDESAGA_SMS_USER and RIDESAGA_SMS_TOKEN, not the URL".into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("bad port {port:?}"))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !host_ok {
            return Err(format!("bad host {host:?}"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the path has a space or a control character".into());
        }
        Ok(Endpoint {
            https,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// The provider and the sender: `RIDESAGA_SMS_*`.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub endpoint: Endpoint,
    /// The account (basic authentication's user).
    pub user: String,
    /// Its token (basic authentication's password).
    pub token: Secret,
    /// The sender: a number in E.164 or an alphanumeric sender id.
    pub from: String,
    /// The header that carries the idempotency key.
    pub idempotency_header: String,
    /// How long one request may take.
    pub timeout: Duration,
}

impl SmsConfig {
    /// The SMS settings, if `RIDESAGA_SMS_URL` is set.
    pub fn load(settings: &Settings) -> Result<Option<SmsConfig>, ConfigError> {
        let Some(url) = settings.raw("RIDESAGA_SMS_URL") else {
            return Ok(None);
        };
        let endpoint: Endpoint = url.parse().map_err(|problem| ConfigError {
            name: "RIDESAGA_SMS_URL".into(),
            value: url.clone(),
            problem,
        })?;
        let needed = |name: &str| ConfigError {
            name: name.into(),
            value: String::new(),
            problem: "needed with RIDESAGA_SMS_URL".into(),
        };
        let user = settings
            .raw("RIDESAGA_SMS_USER")
            .ok_or_else(|| needed("RIDESAGA_SMS_USER"))?;
        let token = settings
            .secret_or_file("RIDESAGA_SMS_TOKEN")?
            .ok_or_else(|| needed("RIDESAGA_SMS_TOKEN (or RIDESAGA_SMS_TOKEN_FILE)"))?;
        let from = settings
            .raw("RIDESAGA_SMS_FROM")
            .ok_or_else(|| needed("RIDESAGA_SMS_FROM"))?;
        let header = settings.get(
            "RIDESAGA_SMS_IDEMPOTENCY_HEADER",
            "Idempotency-Key".to_owned(),
        )?;
        let header_ok = !header.is_empty()
            && header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !header_ok {
            return Err(ConfigError {
                name: "RIDESAGA_SMS_IDEMPOTENCY_HEADER".into(),
                value: header,
                problem: "a header name is letters, digits, '-' and '_'".into(),
            });
        }
        let timeout = settings.duration("RIDESAGA_SMS_TIMEOUT", Duration::from_secs(10))?;
        Ok(Some(SmsConfig {
            endpoint,
            user,
            token,
            from,
            idempotency_header: header,
            timeout,
        }))
    }
}

/// The SMS channel.
pub struct SmsChannel {
    config: SmsConfig,
    /// `Basic <base64 of user:token>`.
    authorization: Secret,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for SmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsChannel")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl SmsChannel {
    pub fn new(config: SmsConfig) -> Result<SmsChannel, ConfigError> {
        let pair = format!("{}:{}", config.user, config.token.expose());
        let authorization = Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ));
        let tls = if config.endpoint.https {
            Some(tls_connector().map_err(|problem| ConfigError {
                name: "RIDESAGA_SMS_URL".into(),
                value: config.endpoint.host.clone(),
                problem,
            })?)
        } else {
            None
        };
        Ok(SmsChannel {
            config,
            authorization,
            tls,
        })
    }

    /// The request that sends `body` to `to`, keyed by `key`.
    fn request(&self, to: &str, body: &str, key: &str) -> Vec<u8> {
        let form = format!(
            "To={}&From={}&Body={}",
            form_encode(to),
            form_encode(&self.config.from),
            form_encode(body)
        );
        let endpoint = &self.config.endpoint;
        let default_port = if endpoint.https { 443 } else { 80 };
        let host = if endpoint.port == default_port {
            endpoint.host.clone()
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             {}: {key}\r\nAccept: application/json\r\nUser-Agent: ridesaga-notification\r\n\
             Connection: close\r\n\r\n",
            endpoint.path,
            self.authorization.expose(),
            form.len(),
            self.config.idempotency_header,
        )
        .into_bytes();
        request.extend_from_slice(form.as_bytes());
        request
    }

    /// Sends `request` and reads the whole answer.
    async fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let endpoint = &self.config.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", endpoint.host, endpoint.port))?;
        match &self.tls {
            None => round_trip(tcp, request).await,
            Some(tls) => {
                let name =
                    tokio_rustls::rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                        .map_err(|e| format!("{}: {e}", endpoint.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", endpoint.host))?;
                round_trip(stream, request).await
            }
        }
    }
}

/// A TLS client configuration with the system's root certificates, on the ring provider.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the store cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no usable root certificates on this system".into());
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Writes `request` and reads until the server closes, at most [`MAX_ANSWER`] bytes.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    stream.flush().await.map_err(|e| format!("sending: {e}"))?;
    let mut answer = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    limited
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if answer.len() > MAX_ANSWER {
        return Err("the answer is larger than 1 MiB".into());
    }
    Ok(answer)
}

/// An HTTP answer: its status and its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses a whole HTTP/1.1 answer (the connection closed after it).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .ok_or("the answer ended before its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

/// Decodes a `chunked` body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("the answer ended inside a chunk")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk has no end")?;
    }
}

/// `application/x-www-form-urlencoded`: letters, digits and `*-._` as they are, space as `+`,
/// every other byte as `%XX`.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// What an answer means: the provider's id of the message, or why not.
pub fn outcome(answer: &Answer) -> Result<String, ChannelError> {
    let text = String::from_utf8_lossy(&answer.body);
    let error = |permanent: bool, problem: String| ChannelError {
        channel: "sms",
        problem,
        permanent,
    };
    match answer.status {
        200..=299 => {
            let json: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
                error(
                    false,
                    format!("the provider's answer is not JSON ({e}): {text:.200}"),
                )
            })?;
            ["sid", "id", "message_id"]
                .iter()
                .find_map(|key| json.get(key).and_then(|v| v.as_str()))
                .map(str::to_owned)
                .ok_or_else(|| {
                    error(
                        false,
                        format!("the answer names no message id: {text:.200}"),
                    )
                })
        }
        408 | 429 | 500..=599 => Err(error(
            false,
            format!("the provider answered {}: {text:.200}", answer.status),
        )),
        status => Err(error(
            true,
            format!("the provider refused it ({status}): {text:.200}"),
        )),
    }
}

impl Channel for SmsChannel {
    fn name(&self) -> &'static str {
        "sms"
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Option<String>, ChannelError> {
        let to = delivery.to.ok_or_else(|| ChannelError {
            channel: "sms",
            problem: "no phone number to send to".into(),
            permanent: true,
        })?;
        let request = self.request(to, &delivery.notice.text, delivery.id.as_str());
        let transient = |problem: String| ChannelError {
            channel: "sms",
            problem,
            permanent: false,
        };
        let raw = tokio::time::timeout(self.config.timeout, self.exchange(&request))
            .await
            .map_err(|_| transient(format!("no answer within {:?}", self.config.timeout)))?
            .map_err(transient)?;
        let answer = parse_answer(&raw).map_err(transient)?;
        outcome(&answer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmsConfig {
        let settings = Settings::from_pairs([
            (
                "RIDESAGA_SMS_URL",
                "http://127.0.0.1:8080/2010-04-01/Messages.json",
            ),
            ("RIDESAGA_SMS_USER", "AC123"),
            ("RIDESAGA_SMS_TOKEN", "tok"),
            ("RIDESAGA_SMS_FROM", "+15005550006"),
        ]);
        SmsConfig::load(&settings).unwrap().unwrap()
    }

    #[test]
    fn an_endpoint_is_split_into_its_parts_and_a_bad_one_refused() {
        let e: Endpoint = "https://api.sms.example.com/v1/Messages.json?x=1"
            .parse()
            .unwrap();
        assert!(e.https);
        assert_eq!((e.host.as_str(), e.port), ("api.sms.example.com", 443));
        assert_eq!(e.path, "/v1/Messages.json?x=1");
        let e: Endpoint = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!((e.port, e.path.as_str()), (9000, "/"));
        for bad in [
            "ftp://x",
            "https://user:pw@host/",
            "https://host:99999/",
            "https:///x",
            "https://ho st/",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_is_a_form_post_with_basic_auth_and_the_idempotency_key() {
        let channel = SmsChannel::new(config()).unwrap();
        let request = channel.request("+4915112345678", "Fare 12.00 & tip", "m_1");
        let text = String::from_utf8(request).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /2010-04-01/Messages.json HTTP/1.1\r\n"));
        assert!(head.contains("\r\nHost: 127.0.0.1:8080\r\n"));
        // base64("AC123:tok")
        assert!(
            head.contains("\r\nAuthorization: Basic QUMxMjM6dG9r\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nIdempotency-Key: m_1\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert_eq!(
            body,
            "To=%2B4915112345678&From=%2B15005550006&Body=Fare+12.00+%26+tip"
        );
        assert!(!format!("{channel:?}").contains("QUMxMjM6dG9r"));
    }

    #[test]
    fn answers_are_read_with_a_length_chunked_or_to_the_end() {
        let sized = b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n{\"sid\":\"S1\"}trailing";
        let answer = parse_answer(sized).unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(outcome(&answer).unwrap(), "S1");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"id\"\r\n7;x=y\r\n:\"S2\"}\n\r\n0\r\n\r\n";
        assert_eq!(outcome(&parse_answer(chunked).unwrap()).unwrap(), "S2");
        let closed = b"HTTP/1.0 200 OK\r\n\r\n{\"message_id\":\"S3\"}";
        assert_eq!(outcome(&parse_answer(closed).unwrap()).unwrap(), "S3");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_answer(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn server_errors_and_throttling_are_transient_other_refusals_permanent() {
        let answer = |status, body: &str| Answer {
            status,
            body: body.as_bytes().to_vec(),
        };
        for status in [408, 429, 500, 503] {
            let e = outcome(&answer(status, "busy")).unwrap_err();
            assert!(!e.permanent, "{status}");
        }
        let e = outcome(&answer(400, "{\"message\":\"invalid To\"}")).unwrap_err();
        assert!(e.permanent && e.problem.contains("invalid To"), "{e}");
        assert!(!outcome(&answer(200, "not json")).unwrap_err().permanent);
        assert!(!outcome(&answer(200, "{}")).unwrap_err().permanent);
    }

    #[test]
    fn the_sms_settings_need_an_account_a_token_and_a_sender() {
        let url = Settings::from_pairs([("RIDESAGA_SMS_URL", "https://sms.example.com/m")]);
        let error = SmsConfig::load(&url).unwrap_err().to_string();
        assert!(error.contains("RIDESAGA_SMS_USER"), "{error}");
        let no_token = url.clone().with("RIDESAGA_SMS_USER", "AC1");
        let error = SmsConfig::load(&no_token).unwrap_err().to_string();
        assert!(error.contains("RIDESAGA_SMS_TOKEN"), "{error}");
        let header = config_with("RIDESAGA_SMS_IDEMPOTENCY_HEADER", "I-Token");
        assert_eq!(header.idempotency_header, "I-Token");
        assert!(!format!("{header:?}").contains("\"tok\""));
    }

    fn config_with(name: &str, value: &str) -> SmsConfig {
        let settings = Settings::from_pairs([
            ("RIDESAGA_SMS_URL", "http://127.0.0.1:8080/m"),
            ("RIDESAGA_SMS_USER", "AC123"),
            ("RIDESAGA_SMS_TOKEN", "tok"),
            ("RIDESAGA_SMS_FROM", "Ridesaga"),
            (name, value),
        ]);
        SmsConfig::load(&settings).unwrap().unwrap()
    }
}
