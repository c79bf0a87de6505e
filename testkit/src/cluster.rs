//! [`NatsCluster`]: three real `nats-server` nodes with JetStream, routed to each other, owned
//! by one test.
//!
//! Each node is a [`NatsServer`] with fixed loopback ports (client, route, monitoring) chosen
//! free up front ([`crate::ports`]), a `server_name` of `n0`, `n1`, `n2`, a store of its own and a `cluster {}`
//! block with routes to all three. A node killed with [`NatsCluster::stop`] comes back with
//! [`NatsCluster::restart`] on the same ports with the same store. Dropping the cluster kills
//! every node and deletes the stores.

use std::sync::Arc;

use async_nats::jetstream;
use tokio::time::{Instant, sleep};

use crate::{
    Error, NatsServer,
    auth::{self, Credentials, Identity},
    config::{self, ClusterBlock, Ports},
    ports, probe,
    server::{Builder, account_of},
};

/// The cluster's name in every node's `cluster {}` block.
pub const CLUSTER_NAME: &str = "ridesaga_testkit";
/// How long the cluster may take to report itself healthy after a start or a node's restart.
pub const DEFAULT_HEALTHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Three `nats-server` nodes with JetStream in one cluster, on free loopback ports.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    credentials: Option<Arc<Credentials>>,
}

impl NatsCluster {
    /// Nodes in a cluster: the smallest that keeps a quorum with one node lost.
    pub const SIZE: usize = 3;

    /// Starts the three nodes, with one set of identities, and waits until every node is
    /// healthy and they agree on a JetStream meta leader.
    pub async fn start() -> Result<NatsCluster, Error> {
        let binary = config::find_nats_server()?;
        let credentials = Credentials::generate()?;
        let mut attempt = 1;
        loop {
            match Self::launch(&binary, &credentials).await {
                Ok(cluster) => return Ok(cluster),
                Err(error) if attempt < ports::START_ATTEMPTS && ports::taken(&error) => {
                    attempt += 1
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn launch(
        binary: &std::path::Path,
        credentials: &Arc<Credentials>,
    ) -> Result<NatsCluster, Error> {
        let ports = ports::free(3 * Self::SIZE)?;
        let (client, rest) = ports.split_at(Self::SIZE);
        let (route, monitor) = rest.split_at(Self::SIZE);
        let builder = |i: usize| {
            Builder::default()
                .binary(binary)
                .credentials(Some(credentials.clone()))
                .node(
                    format!("n{i}"),
                    Ports {
                        client: client[i],
                        monitor: monitor[i],
                    },
                    ClusterBlock {
                        name: CLUSTER_NAME.to_string(),
                        port: route[i],
                        routes: route.to_vec(),
                    },
                )
        };
        // Together: a node reports healthy only once a quorum has elected a meta leader.
        let (n0, n1, n2) =
            tokio::try_join!(builder(0).start(), builder(1).start(), builder(2).start())?;
        let cluster = NatsCluster {
            nodes: vec![n0, n1, n2],
            credentials: Some(credentials.clone()),
        };
        cluster.wait_until_healthy().await?;
        Ok(cluster)
    }

    /// The three client URLs, comma-separated: what `NATS_URL` and `ridectl --server` take.
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// The client URL of every node, in node order.
    pub fn url_list(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// `http://127.0.0.1:<monitoring port>` of every node, in node order.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::monitor_url).collect()
    }

    /// Node `i` (0, 1 or 2).
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i`, to stop or restart it without waiting for the cluster.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node with this `server_name` (what JetStream reports as a leader).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == server_name)
    }

    /// The indices of the nodes whose process is alive.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Kills node `i` with SIGKILL (a crash); its store stays.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Starts node `i` again on its ports with its store, then waits until the whole cluster
    /// is healthy (the node caught up, a meta leader agreed on).
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.nodes[i].restart().await?;
        self.wait_until_healthy().await
    }

    /// The identities every node knows.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_deref()
    }

    /// The account the streams live in (`RIDESAGA`).
    pub fn account(&self) -> &'static str {
        account_of(self.credentials.as_deref())
    }

    /// Connects as `ridectl-admin` to all three nodes; the client moves to another node when
    /// its node goes down.
    pub async fn client(&self) -> Result<async_nats::Client, Error> {
        self.client_as(Identity::Admin).await
    }

    /// Connects as `identity` to all three nodes.
    pub async fn client_as(&self, identity: Identity) -> Result<async_nats::Client, Error> {
        let urls = self.url_list();
        auth::connect_options(identity, self.credentials.as_deref(), None)?
            .connect(urls.as_slice())
            .await
            .map_err(|source| Error::Connect {
                url: self.urls(),
                source,
            })
    }

    /// The environment of a process connecting as `identity` to the three nodes.
    pub fn env(&self, identity: Identity) -> Vec<(String, String)> {
        auth::environment(self.urls(), identity, self.credentials.as_deref(), None)
    }

    /// Connects as `ridectl-admin` to all three nodes and wraps the client in a JetStream
    /// context.
    pub async fn jetstream(&self) -> Result<jetstream::Context, Error> {
        Ok(jetstream::new(self.client().await?))
    }

    /// The `server_name` of the JetStream meta leader, as the first running node that knows
    /// one reports it.
    pub async fn meta_leader(&self) -> Option<String> {
        for node in &self.nodes {
            if node.pid().is_some()
                && let Some(leader) = probe::meta_leader(node.monitor_port()).await
            {
                return Some(leader);
            }
        }
        None
    }

    /// Waits until every running node answers `/healthz` with 200 and all of them report the
    /// same meta leader, itself a running node.
    pub async fn wait_until_healthy(&self) -> Result<(), Error> {
        let deadline = Instant::now() + DEFAULT_HEALTHY_TIMEOUT;
        loop {
            let waiting_for = self.unhealthy_because().await;
            let Some(waiting_for) = waiting_for else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout: DEFAULT_HEALTHY_TIMEOUT,
                    waiting_for,
                    log_tail: self.log_tails(crate::server::LOG_TAIL_LINES),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// What keeps the cluster from being healthy, or `None` when it is.
    async fn unhealthy_because(&self) -> Option<String> {
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
        let mut leaders = Vec::new();
        for node in &running {
            if !probe::healthy(node.monitor_port()).await {
                return Some(format!("{}: /healthz to answer 200", node.name()));
            }
            leaders.push(probe::meta_leader(node.monitor_port()).await);
        }
        let first = leaders.first().cloned().flatten();
        match first {
            Some(leader)
                if leaders
                    .iter()
                    .all(|l| l.as_deref() == Some(leader.as_str()))
                    && running.iter().any(|n| n.name() == leader) =>
            {
                None
            }
            _ => Some(format!(
                "the running nodes to agree on a meta leader among them (they report {leaders:?})"
            )),
        }
    }

    /// The last `lines` lines of every node's log, labelled by node.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("=== {} ===\n{}", n.name(), n.log_tail(lines)))
            .collect()
    }
}
