//! [`SmsReceiver`]: a local HTTP server that answers like an SMS provider's API, for tests. It
//! takes `POST`s of a form (`To`, `From`, `Body`) with basic authentication, records every
//! request, and answers `201` with JSON naming the message's id (`sid`). A request whose
//! idempotency key (`Idempotency-Key`) it accepted before gets the first answer again and sends
//! nothing more, as providers do. It can be told to fail the next requests with a status.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// One request the receiver was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRequest {
    pub method: String,
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The decoded form fields.
    pub form: HashMap<String, String>,
    /// The status it was answered with.
    pub status: u16,
}

/// A message the receiver accepted (once per idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<SmsRequest>,
    messages: Vec<Sms>,
    /// The sid answered for each idempotency key accepted.
    keys: HashMap<String, String>,
    /// Statuses to answer the next requests with, instead of accepting them.
    failures: VecDeque<u16>,
}

/// A running receiver; it stops when dropped.
#[derive(Debug)]
pub struct SmsReceiver {
    port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmsReceiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> Result<SmsReceiver, Error> {
        Self::start_on(0).await
    }

    /// Starts a receiver on 127.0.0.1:`port` (0: a free one).
    pub async fn start_on(port: u16) -> Result<SmsReceiver, Error> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(Error::io("bind the SMS receiver"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("bind the SMS receiver"))?
            .port();
        let state: Arc<Mutex<State>> = Arc::default();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, state.clone()));
                }
            }
        });
        Ok(SmsReceiver { port, state, task })
    }

    /// The endpoint's URL: `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Answers the next requests with these statuses, in order, instead of accepting them.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().failures.extend(statuses);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SmsRequest> {
        self.lock().requests.clone()
    }

    /// Every message accepted so far, once each.
    pub fn messages(&self) -> Vec<Sms> {
        self.lock().messages.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SmsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, answers it and closes the connection.
async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some((head, body)) = read_request(&mut stream).await else {
        return;
    };
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let form = parse_form(&body);
    let key = headers.get("idempotency-key").cloned();
    let (status, answer) = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let (status, answer) = if let Some(status) = state.failures.pop_front() {
            (
                status,
                format!("{{\"message\":\"failing on purpose with {status}\"}}"),
            )
        } else if method != "POST" || !headers.contains_key("authorization") {
            (401, "{\"message\":\"authentication required\"}".to_owned())
        } else if let Some(sid) = key.as_ref().and_then(|k| state.keys.get(k)) {
            (201, format!("{{\"sid\":\"{sid}\",\"status\":\"queued\"}}"))
        } else {
            let sid = format!("SM{:08}", state.messages.len() + 1);
            state.messages.push(Sms {
                sid: sid.clone(),
                to: form.get("To").cloned().unwrap_or_default(),
                from: form.get("From").cloned().unwrap_or_default(),
                body: form.get("Body").cloned().unwrap_or_default(),
                idempotency_key: key.clone(),
            });
            if let Some(key) = &key {
                state.keys.insert(key.clone(), sid.clone());
            }
            (201, format!("{{\"sid\":\"{sid}\",\"status\":\"queued\"}}"))
        };
        state.requests.push(SmsRequest {
            method,
            path,
            authorization: headers.get("authorization").cloned(),
            idempotency_key: key,
            form,
            status,
        });
        (status, answer)
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The head (as text) and the body of one request, read by its `Content-Length`.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > 1 << 20 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((head, body))
}

/// Decodes `application/x-www-form-urlencoded`.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded() {
        let form = parse_form(b"To=%2B4915112345678&Body=Fare+12.00+%26+tip&Empty=");
        assert_eq!(form["To"], "+4915112345678");
        assert_eq!(form["Body"], "Fare 12.00 & tip");
        assert_eq!(form["Empty"], "");
        assert_eq!(decode("100%"), "100%");
    }
}
