//! Consumer lag as KEDA's `nats-jetstream` scaler (2.20) reads it from the NATS monitoring
//! port, and the replica count its HPA derives from it. Pure: the `/jsz` and `/varz` answers,
//! finding the account, stream and consumer in them, choosing the node whose answer counts,
//! and the arithmetic. [`crate::monitor`] fetches the answers.
//!
//! What KEDA does, and this module with it:
//! - It asks `GET /jsz?acc=<account>&config=true&consumers=true` ([`jsz_path`]).
//! - It takes the account whose `id` or `name` is the configured account (`RIDESAGA`; `$G` is
//!   the default account of a server without accounts), the stream by `name`, and the consumer by `name`
//!   (a durable consumer's name is its durable name). Any of them missing is an error, and KEDA
//!   then applies the ScaledObject's fallback.
//! - The lag is `num_pending + num_ack_pending`: messages not yet delivered plus messages
//!   delivered and not yet acknowledged. It only falls when messages are acknowledged.
//! - In a cluster (`meta_cluster.cluster_size > 1`) only the consumer's leader counts pending
//!   messages; followers report stale figures. The answer used is the one from the node whose
//!   `server_name` (from its `/varz`) equals the consumer's `cluster.leader` as that node
//!   reports it; no such node is an error.
//! - The HPA wants `ceil(lag / lagThreshold)` replicas, within `[minReplicaCount,
//!   maxReplicaCount]`; with `minReplicaCount: 0` a lag at or below `activationLagThreshold`
//!   scales to zero ([`ScalePolicy::replicas`]).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The account Ridesaga's streams live in (`ridesaga_schemas::auth::ACCOUNT`), as the
/// ScaledObjects name it.
pub const DEFAULT_ACCOUNT: &str = ridesaga_schemas::auth::ACCOUNT;
/// The account of a server without configured accounts.
pub const GLOBAL_ACCOUNT: &str = "$G";

/// Path and query of KEDA's `/jsz` request for `account` (the query encoded as Go's
/// `url.Values` encodes it: keys sorted, `$` as `%24`).
pub fn jsz_path(account: &str) -> String {
    format!(
        "/jsz?acc={}&config=true&consumers=true",
        query_escape(account)
    )
}

/// Percent-encoding of a query value: unreserved characters stay, a space becomes `+`.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `null` and a missing field both read as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The parts of a `/jsz` answer the scaler reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jsz {
    #[serde(default, deserialize_with = "null_as_default")]
    pub server_id: String,
    /// Present on a clustered server only.
    #[serde(default)]
    pub meta_cluster: Option<MetaCluster>,
    /// Absent when the requested account is unknown or uses no JetStream.
    #[serde(default, deserialize_with = "null_as_default")]
    pub account_details: Vec<AccountDetail>,
}

impl Jsz {
    /// The JetStream cluster's size as this node reports it (0 on a single server).
    pub fn cluster_size(&self) -> usize {
        self.meta_cluster.as_ref().map_or(0, |m| m.cluster_size)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetaCluster {
    #[serde(default)]
    pub cluster_size: usize,
    #[serde(default)]
    pub leader: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccountDetail {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamDetail {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsumerDetail {
    pub name: String,
    #[serde(default)]
    pub num_pending: u64,
    #[serde(default)]
    pub num_ack_pending: u64,
    #[serde(default)]
    pub num_redelivered: u64,
    #[serde(default)]
    pub num_waiting: u64,
    /// Present on a clustered server only.
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
}

impl ConsumerDetail {
    /// The consumer's leader as this node reports it (none on a single server, or while no
    /// leader is elected).
    pub fn leader(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .filter(|l| !l.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterInfo {
    #[serde(default)]
    pub leader: Option<String>,
}

/// The parts of a `/varz` answer used to name a node and find its peers.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Varz {
    #[serde(default, deserialize_with = "null_as_default")]
    pub server_name: String,
    /// Client URLs the cluster advertises (`host:port`); empty when not advertised.
    #[serde(default, deserialize_with = "null_as_default")]
    pub connect_urls: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cluster: VarzCluster,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VarzCluster {
    /// Route URLs (`host:port`) of the cluster's nodes.
    #[serde(default, deserialize_with = "null_as_default")]
    pub urls: Vec<String>,
}

/// What to read: the account (its id or name), the stream and the consumer.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub account: &'a str,
    pub stream: &'a str,
    pub consumer: &'a str,
}

/// Why a consumer's lag cannot be read; KEDA reports an error for each and applies the
/// ScaledObject's fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LagError {
    /// No node answered.
    NoAnswer,
    AccountNotFound {
        account: String,
    },
    StreamNotFound {
        account: String,
        stream: String,
    },
    ConsumerNotFound {
        stream: String,
        consumer: String,
    },
    /// The consumer exists, but no node that answered is its leader.
    LeaderNotFound {
        consumer: String,
        /// The leaders the nodes named (empty while none is elected).
        leaders: Vec<String>,
        /// The nodes that answered.
        nodes: Vec<String>,
    },
}

impl fmt::Display for LagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LagError::NoAnswer => write!(f, "no monitoring endpoint answered"),
            LagError::AccountNotFound { account } => write!(
                f,
                "account {account} not found in /jsz (no such account, or it has no JetStream \
                 streams)"
            ),
            LagError::StreamNotFound { account, stream } => {
                write!(f, "stream {stream} not found in account {account}")
            }
            LagError::ConsumerNotFound { stream, consumer } => {
                write!(f, "consumer {consumer} not found on stream {stream}")
            }
            LagError::LeaderNotFound {
                consumer,
                leaders,
                nodes,
            } => {
                let leader = if leaders.is_empty() {
                    "none elected".to_owned()
                } else {
                    leaders.join(", ")
                };
                write!(
                    f,
                    "the leader of consumer {consumer} ({leader}) is not among the nodes that \
                     answered ({})",
                    nodes.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for LagError {}

impl LagError {
    /// Whether the error concerns the account or the stream, and so every consumer alike.
    pub fn is_shared(&self) -> bool {
        matches!(
            self,
            LagError::NoAnswer | LagError::AccountNotFound { .. } | LagError::StreamNotFound { .. }
        )
    }

    /// How far the lookup got: an error found deeper in account, stream, consumer wins.
    fn depth(&self) -> u8 {
        match self {
            LagError::NoAnswer => 0,
            LagError::AccountNotFound { .. } => 1,
            LagError::StreamNotFound { .. } => 2,
            LagError::ConsumerNotFound { .. } => 3,
            LagError::LeaderNotFound { .. } => 4,
        }
    }
}

/// Finds the consumer in one node's `/jsz` answer.
pub fn find<'a>(jsz: &'a Jsz, target: Target<'_>) -> Result<&'a ConsumerDetail, LagError> {
    let accounts: Vec<&AccountDetail> = jsz
        .account_details
        .iter()
        .filter(|a| a.id == target.account || a.name == target.account)
        .collect();
    if accounts.is_empty() {
        return Err(LagError::AccountNotFound {
            account: target.account.to_owned(),
        });
    }
    let streams: Vec<&StreamDetail> = accounts
        .iter()
        .flat_map(|a| &a.stream_detail)
        .filter(|s| s.name == target.stream)
        .collect();
    if streams.is_empty() {
        return Err(LagError::StreamNotFound {
            account: target.account.to_owned(),
            stream: target.stream.to_owned(),
        });
    }
    streams
        .iter()
        .flat_map(|s| &s.consumer_detail)
        .find(|c| c.name == target.consumer)
        .ok_or_else(|| LagError::ConsumerNotFound {
            stream: target.stream.to_owned(),
            consumer: target.consumer.to_owned(),
        })
}

/// One node's answers: where it was asked, its `server_name`, its `/jsz`.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// The monitoring base URL that answered.
    pub url: String,
    pub server_name: String,
    pub jsz: Jsz,
}

/// A consumer's lag as KEDA reads it, and which node's answer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    pub pending: u64,
    pub ack_pending: u64,
    /// The `server_name` of the node whose answer was used (the consumer leader in a cluster).
    pub node: String,
    /// That node's monitoring base URL.
    pub url: String,
}

impl ConsumerLag {
    /// `num_pending + num_ack_pending`: the scaler's metric.
    pub fn lag(&self) -> u64 {
        self.pending + self.ack_pending
    }
}

/// Whether the nodes form a JetStream cluster (any reports a cluster of more than one node).
pub fn clustered(reports: &[NodeReport]) -> bool {
    reports.iter().any(|r| r.jsz.cluster_size() > 1)
}

/// The consumer's lag from the answer that counts: on a single server the first node's, in a
/// cluster the answer of the node that reports itself as the consumer's leader.
pub fn resolve(reports: &[NodeReport], target: Target<'_>) -> Result<ConsumerLag, LagError> {
    let lag = |report: &NodeReport, consumer: &ConsumerDetail| ConsumerLag {
        pending: consumer.num_pending,
        ack_pending: consumer.num_ack_pending,
        node: report.server_name.clone(),
        url: report.url.clone(),
    };
    let first = reports.first().ok_or(LagError::NoAnswer)?;
    if !clustered(reports) {
        return find(&first.jsz, target).map(|consumer| lag(first, consumer));
    }
    let mut deepest = LagError::NoAnswer;
    let mut leaders: Vec<String> = Vec::new();
    for report in reports {
        match find(&report.jsz, target) {
            Ok(consumer) => {
                if let Some(leader) = consumer.leader() {
                    if leader == report.server_name {
                        return Ok(lag(report, consumer));
                    }
                    if !leaders.iter().any(|l| l == leader) {
                        leaders.push(leader.to_owned());
                    }
                }
                deepest = LagError::LeaderNotFound {
                    consumer: target.consumer.to_owned(),
                    leaders: Vec::new(),
                    nodes: Vec::new(),
                };
            }
            Err(error) if error.depth() > deepest.depth() => deepest = error,
            Err(_) => {}
        }
    }
    if let LagError::LeaderNotFound { consumer, .. } = deepest {
        return Err(LagError::LeaderNotFound {
            consumer,
            leaders,
            nodes: reports.iter().map(|r| r.server_name.clone()).collect(),
        });
    }
    Err(deepest)
}

/// The ScaledObject's trigger and replica bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePolicy {
    /// `lagThreshold`: the lag one replica is meant to carry (at least 1).
    pub lag_threshold: u64,
    /// `activationLagThreshold`: at or below it the scaler reports itself inactive.
    pub activation_lag_threshold: u64,
    /// `minReplicaCount`.
    pub min_replicas: u32,
    /// `maxReplicaCount`.
    pub max_replicas: u32,
}

impl ScalePolicy {
    /// Whether KEDA counts the scaler active: lag above the activation threshold.
    pub fn active(&self, lag: u64) -> bool {
        lag > self.activation_lag_threshold
    }

    /// The replicas KEDA's HPA settles on for `lag`: `ceil(lag / lagThreshold)` within
    /// `[max(min, 1), max]`; with a minimum of 0, zero while the scaler is inactive (KEDA scales
    /// to zero itself and gives the HPA a minimum of 1). With a minimum of 1 or more the
    /// activation threshold changes nothing. The HPA's 10 % tolerance around the current count
    /// and its scale-down stabilisation window delay, but do not change, where it settles.
    pub fn replicas(&self, lag: u64) -> u32 {
        if self.min_replicas == 0 && !self.active(lag) {
            return 0;
        }
        let floor = self.min_replicas.max(1);
        let ceiling = self.max_replicas.max(floor);
        let wanted = lag.div_ceil(self.lag_threshold.max(1));
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        wanted.clamp(floor, ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from nats-server 2.15.1 with the Ridesaga streams provisioned: a single server
    // (`capture_single`, five ride requests, two of them fetched and not acknowledged) and a
    // three-node cluster (`capture_n1`..`capture_n3`, streams and consumers with three
    // replicas, three ride requests, one fetched and not acknowledged). Consumers other than
    // ride-worker and driver-worker are left out to keep the files short.
    const SINGLE_JSZ: &str = include_str!("../tests/fixtures/monitoring/single-jsz.json");
    const SINGLE_UNKNOWN_ACCOUNT: &str =
        include_str!("../tests/fixtures/monitoring/single-jsz-unknown-account.json");
    const SINGLE_VARZ: &str = include_str!("../tests/fixtures/monitoring/single-varz.json");
    const CLUSTER_JSZ: [&str; 3] = [
        include_str!("../tests/fixtures/monitoring/cluster-n1-jsz.json"),
        include_str!("../tests/fixtures/monitoring/cluster-n2-jsz.json"),
        include_str!("../tests/fixtures/monitoring/cluster-n3-jsz.json"),
    ];
    const CLUSTER_N2_VARZ: &str = include_str!("../tests/fixtures/monitoring/cluster-n2-varz.json");

    /// The fixtures were captured from servers without accounts.
    fn target(consumer: &str) -> Target<'_> {
        Target {
            account: GLOBAL_ACCOUNT,
            stream: "RIDESAGA",
            consumer,
        }
    }

    fn report(name: &str, jsz: &str) -> NodeReport {
        NodeReport {
            url: format!("http://{name}:8222"),
            server_name: name.to_owned(),
            jsz: serde_json::from_str(jsz).unwrap(),
        }
    }

    fn cluster() -> Vec<NodeReport> {
        ["capture_n1", "capture_n2", "capture_n3"]
            .iter()
            .zip(CLUSTER_JSZ)
            .map(|(name, jsz)| report(name, jsz))
            .collect()
    }

    #[test]
    fn the_query_is_the_one_keda_sends() {
        assert_eq!(jsz_path("$G"), "/jsz?acc=%24G&config=true&consumers=true");
        assert_eq!(
            jsz_path("RIDE SAGA/1"),
            "/jsz?acc=RIDE+SAGA%2F1&config=true&consumers=true"
        );
    }

    #[test]
    fn a_single_server_reports_pending_plus_ack_pending() {
        let reports = [report("capture_single", SINGLE_JSZ)];
        assert!(!clustered(&reports));
        let lag = resolve(&reports, target("ride-worker")).unwrap();
        assert_eq!((lag.pending, lag.ack_pending, lag.lag()), (3, 2, 5));
        assert_eq!(lag.node, "capture_single");
        let idle = resolve(&reports, target("driver-worker")).unwrap();
        assert_eq!(idle.lag(), 0);
    }

    #[test]
    fn the_account_matches_by_id_or_name() {
        let jsz: Jsz = serde_json::from_str(SINGLE_JSZ).unwrap();
        let mut renamed = jsz.clone();
        renamed.account_details[0].name = "RIDESAGA_ACCOUNT".into();
        for account in ["$G", "RIDESAGA_ACCOUNT"] {
            let t = Target {
                account,
                ..target("ride-worker")
            };
            assert_eq!(find(&renamed, t).unwrap().num_pending, 3, "{account}");
        }
    }

    #[test]
    fn what_is_missing_is_named() {
        let unknown: Jsz = serde_json::from_str(SINGLE_UNKNOWN_ACCOUNT).unwrap();
        let reports = [NodeReport {
            url: "http://x:8222".into(),
            server_name: "x".into(),
            jsz: unknown,
        }];
        let t = Target {
            account: "NOPE",
            ..target("ride-worker")
        };
        let error = resolve(&reports, t).unwrap_err();
        assert_eq!(
            error,
            LagError::AccountNotFound {
                account: "NOPE".into()
            }
        );
        assert!(error.is_shared());
        assert!(
            error.to_string().contains("account NOPE not found"),
            "{error}"
        );

        let reports = [report("capture_single", SINGLE_JSZ)];
        let t = Target {
            stream: "NOPE",
            ..target("ride-worker")
        };
        let error = resolve(&reports, t).unwrap_err();
        assert_eq!(error.to_string(), "stream NOPE not found in account $G");
        assert!(error.is_shared());

        let error = resolve(&reports, target("gone-worker")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "consumer gone-worker not found on stream RIDESAGA"
        );
        assert!(!error.is_shared());

        assert_eq!(resolve(&[], target("ride-worker")), Err(LagError::NoAnswer));
    }

    #[test]
    fn in_a_cluster_the_leader_answers_and_followers_are_ignored() {
        let reports = cluster();
        assert!(clustered(&reports));
        // Followers report the consumer with nothing pending; only its leader counts.
        let follower = find(&reports[0].jsz, target("ride-worker")).unwrap();
        assert_eq!(
            (follower.num_pending, follower.leader()),
            (0, Some("capture_n2"))
        );
        let lag = resolve(&reports, target("ride-worker")).unwrap();
        assert_eq!(lag.node, "capture_n2");
        assert_eq!((lag.pending, lag.ack_pending, lag.lag()), (2, 1, 3));
        // Another consumer, another leader: the answer comes from that node.
        let lag = resolve(&reports, target("driver-worker")).unwrap();
        assert_eq!(lag.node, "capture_n1");
        // The order the nodes are given in does not matter.
        let mut reversed = cluster();
        reversed.reverse();
        assert_eq!(resolve(&reversed, target("ride-worker")).unwrap().lag(), 3);
    }

    #[test]
    fn a_cluster_without_the_leader_among_the_answers_is_an_error() {
        let mut reports = cluster();
        reports.remove(1);
        let error = resolve(&reports, target("ride-worker")).unwrap_err();
        assert_eq!(
            error,
            LagError::LeaderNotFound {
                consumer: "ride-worker".into(),
                leaders: vec!["capture_n2".into()],
                nodes: vec!["capture_n1".into(), "capture_n3".into()],
            }
        );
        assert!(error.to_string().contains("(capture_n2)"), "{error}");
        // A consumer missing everywhere is still named as missing.
        let error = resolve(&reports, target("gone-worker")).unwrap_err();
        assert!(
            matches!(error, LagError::ConsumerNotFound { .. }),
            "{error}"
        );
    }

    #[test]
    fn varz_names_the_node_and_its_peers() {
        let varz: Varz = serde_json::from_str(CLUSTER_N2_VARZ).unwrap();
        assert_eq!(varz.server_name, "capture_n2");
        assert_eq!(varz.connect_urls.len(), 3);
        assert_eq!(varz.cluster.urls.len(), 3);
        let single: Varz = serde_json::from_str(SINGLE_VARZ).unwrap();
        assert_eq!(single.server_name, "capture_single");
        assert!(single.connect_urls.is_empty() && single.cluster.urls.is_empty());
    }

    #[test]
    fn replicas_are_the_lag_over_the_threshold_rounded_up_within_bounds() {
        let policy = ScalePolicy {
            lag_threshold: 100,
            activation_lag_threshold: 0,
            min_replicas: 1,
            max_replicas: 10,
        };
        let cases = [
            (0, 1),
            (1, 1),
            (100, 1),
            (101, 2),
            (250, 3),
            (1000, 10),
            (5000, 10),
        ];
        for (lag, replicas) in cases {
            assert_eq!(policy.replicas(lag), replicas, "lag {lag}");
        }
        assert!(!policy.active(0));
        assert!(policy.active(1));
        // A minimum of 1 keeps one replica even when inactive; a minimum of 0 scales to zero
        // until the lag exceeds the activation threshold, then at least one.
        let to_zero = ScalePolicy {
            min_replicas: 0,
            activation_lag_threshold: 5,
            ..policy
        };
        assert_eq!(to_zero.replicas(0), 0);
        assert_eq!(to_zero.replicas(5), 0);
        assert_eq!(to_zero.replicas(6), 1);
        assert_eq!(to_zero.replicas(201), 3);
        let floor = ScalePolicy {
            min_replicas: 3,
            ..policy
        };
        assert_eq!(floor.replicas(150), 3);
        assert_eq!(floor.replicas(450), 5);
        assert_eq!(
            ScalePolicy {
                max_replicas: u32::MAX,
                lag_threshold: 1,
                ..policy
            }
            .replicas(u64::MAX),
            u32::MAX
        );
    }
}
