//! `/healthz` and `/metrics` over a deliberately small HTTP/1.1 responder: two read-only GET
//! routes for probes and scrapers do not justify a web framework in every worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// What the HTTP endpoints read.
#[derive(Debug, Clone)]
pub(super) struct HttpState {
    pub service: &'static str,
    pub instance: String,
    pub metrics: Arc<Metrics>,
    pub nats: async_nats::Client,
}

/// Binds the listener (so the caller learns the port) and serves until `shutdown`.
pub(super) async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            if let Ok((stream, _)) = accepted {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), respond(stream, state)).await;
                });
            }
        }
    });
    Ok(local)
}

async fn respond(mut stream: TcpStream, state: HttpState) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return write(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return write(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" => {
            let connected =
                state.nats.connection_state() == async_nats::connection::State::Connected;
            if connected {
                write(&mut stream, "200 OK", "text/plain", "ok\n").await
            } else {
                write(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "nats disconnected\n",
                )
                .await
            }
        }
        "/metrics" => {
            let body = state.metrics.render(state.service, &state.instance);
            write(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        _ => write(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
