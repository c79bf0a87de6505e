//! The harness itself: a real server starts on free ports, serves monitoring, survives a
//! crash-and-restart with its store, and leaves nothing behind when dropped.

use std::{path::Path, time::Duration};

use async_nats::jetstream::stream;
use ridesaga_testkit::{Error, NatsServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `GET path` on the monitoring port; returns the whole response.
async fn http_get(server: &NatsServer, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", server.monitor_port()))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_started_server_accepts_clients_and_answers_on_its_monitoring_port() {
    let server = NatsServer::start().await.unwrap();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_eq!(
        server.monitor_url(),
        format!("http://127.0.0.1:{}", server.monitor_port())
    );

    let client = server.client().await.unwrap();
    client.publish("hello", "world".into()).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(client.server_info().port, server.port());

    let varz = http_get(&server, "/varz").await;
    assert!(
        varz.starts_with("HTTP/1.0 200") || varz.starts_with("HTTP/1.1 200"),
        "{varz}"
    );
    assert!(varz.contains("\"jetstream\""), "JetStream is on: {varz}");
}

#[tokio::test]
async fn two_servers_run_side_by_side_on_different_ports_and_stores() {
    let (first, second) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.port(), second.port());
    assert_ne!(first.monitor_port(), second.monitor_port());
    assert_ne!(first.store_dir(), second.store_dir());
}

#[tokio::test]
async fn dropping_the_server_kills_it_and_removes_its_store() {
    let server = NatsServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    assert!(dir.exists());

    drop(server);

    assert!(!process_exists(pid), "nats-server {pid} still running");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn a_restarted_server_is_back_on_the_same_port_with_the_same_store() {
    let mut server = NatsServer::start().await.unwrap();
    let (port, monitor_port) = (server.port(), server.monitor_port());
    let js = server.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "KEPT".into(),
        subjects: vec!["kept.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("kept.one", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.stop();
    assert!(!server.is_running());
    assert!(server.store_dir().exists(), "stop keeps the store");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "port closed"
    );
    assert!(matches!(server.client().await, Err(Error::NotRunning)));

    server.restart().await.unwrap();
    assert!(server.is_running());
    assert_eq!((server.port(), server.monitor_port()), (port, monitor_port));

    // A fresh client, so the assertion does not depend on reconnect timing.
    let js = server.jetstream().await.unwrap();
    let info = js
        .get_stream("KEPT")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 1);
}

#[tokio::test]
async fn a_missing_binary_is_reported_with_its_path() {
    let error = NatsServer::builder()
        .binary("/nonexistent/nats-server")
        .start()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/nats-server"),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_that_rejects_its_configuration_reports_why_with_its_log_tail() {
    let error = NatsServer::builder()
        .extra_config("this is { not valid")
        .startup_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Exited { .. }), "{error}");
    assert!(error.to_string().contains("--- last lines of"), "{error}");
}
