//! The harness itself: a real server starts on free ports, serves monitoring, survives a
//! crash-and-restart with its store, and leaves nothing behind when dropped; a three-node
//! cluster elects a meta leader, keeps a replicated stream through a node's crash and restart.

use std::{path::Path, time::Duration};

use async_nats::jetstream::{self, stream};
use ridesaga_testkit::{Error, NatsCluster, NatsServer};
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
    client
        .publish("cmd.hello.world", "hi".into())
        .await
        .unwrap();
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
        subjects: vec!["evt.kept.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("evt.kept.one", "1".into())
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

/// Publishes until the stream stores the message (a stream leader may be moving), with one
/// `Nats-Msg-Id` so a retried publish is stored once.
async fn publish_until_stored(js: &jetstream::Context, subject: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = jetstream::message::PublishMessage::build()
            .payload("x".into())
            .message_id(id);
        let stored = match js.send_publish(subject.to_string(), message).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(_) => return,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{subject} never stored: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream's info once its replicas have a leader (retried while one is being elected).
async fn stream_with_leader(js: &jetstream::Context, name: &str) -> stream::Info {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(name).await
            && let Ok(info) = stream.info().await
            && info
                .cluster
                .as_ref()
                .and_then(|c| c.leader.as_ref())
                .is_some()
        {
            return info.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} has no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cluster_elects_a_meta_leader_and_keeps_a_replicated_stream_through_a_node_crash() {
    let mut cluster = NatsCluster::start().await.unwrap();
    let urls = cluster.url_list();
    assert_eq!(cluster.urls(), urls.join(","));
    assert_eq!(urls.len(), NatsCluster::SIZE);
    let names: Vec<&str> = (0..NatsCluster::SIZE)
        .map(|i| cluster.node(i).name())
        .collect();
    assert_eq!(names, ["n0", "n1", "n2"]);
    let leader = cluster.meta_leader().await.expect("a meta leader");
    assert!(cluster.index_of(&leader).is_some(), "{leader}");

    let js = cluster.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "KEPT".into(),
        subjects: vec!["evt.kept.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    publish_until_stored(&js, "evt.kept.one", "one").await;
    let info = stream_with_leader(&js, "KEPT").await;
    let placement = info.cluster.unwrap();
    assert_eq!(
        placement.replicas.len(),
        2,
        "R3: a leader and two followers"
    );

    // The stream's leader crashes: the other two elect another and keep storing.
    let crashed = cluster
        .index_of(placement.leader.as_deref().unwrap())
        .unwrap();
    let (port, monitor_port) = (
        cluster.node(crashed).port(),
        cluster.node(crashed).monitor_port(),
    );
    cluster.stop(crashed);
    assert_eq!(cluster.running().len(), 2);
    publish_until_stored(&js, "evt.kept.two", "two").await;
    let info = stream_with_leader(&js, "KEPT").await;
    let new_leader = info.cluster.as_ref().unwrap().leader.clone().unwrap();
    assert_ne!(cluster.index_of(&new_leader), Some(crashed));
    assert_eq!(info.state.messages, 2);

    // Back on the same ports with its store, it catches up with what it missed.
    cluster.restart(crashed).await.unwrap();
    assert_eq!(cluster.running().len(), 3);
    let node = cluster.node(crashed);
    assert_eq!((node.port(), node.monitor_port()), (port, monitor_port));
    let restarted = jetstream::new(node.client().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream_with_leader(&restarted, "KEPT").await;
        let replicas = info.cluster.unwrap().replicas;
        if info.state.messages == 2 && replicas.iter().all(|r| r.current) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted node never caught up: {} messages, {replicas:?}",
            info.state.messages
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dropping_a_cluster_kills_every_node_and_removes_their_stores() {
    let cluster = NatsCluster::start().await.unwrap();
    let nodes: Vec<(u32, std::path::PathBuf)> = (0..NatsCluster::SIZE)
        .map(|i| {
            let node = cluster.node(i);
            (node.pid().unwrap(), node.dir().to_path_buf())
        })
        .collect();
    drop(cluster);
    for (pid, dir) in nodes {
        assert!(!process_exists(pid), "nats-server {pid} still running");
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}
