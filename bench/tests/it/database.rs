//! The run's PostgreSQL cluster against a real server: its postmaster is found, its processes
//! are measured as one (a new connection's backend among them), every service gets a database
//! of its own, and the runtime's floor runs on it.

use crate::common::BenchServer;

use std::collections::BTreeSet;

use ridesaga_bench::database::Cluster;
use ridesaga_bench::fleet::Databases;
use ridesaga_bench::{floor, procfs};
use ridesaga_schemas::streams::{self, ProvisionOptions};
use sqlx::Connection as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_is_measured_as_its_postmaster_and_every_process_it_started() {
    let cluster = Cluster::start().await.expect("PostgreSQL starts");
    let exe = std::fs::read_link(format!("/proc/{}/exe", cluster.postmaster))
        .expect("the postmaster runs");
    assert!(exe.ends_with("postgres"), "{exe:?}");
    assert!(
        cluster.describe().contains("fsync=off"),
        "{}",
        cluster.describe()
    );

    let Databases::Urls(urls) = cluster.databases("t").expect("databases") else {
        panic!("PostgreSQL databases are URLs");
    };
    assert_eq!(urls.len(), 5);
    let distinct: BTreeSet<&String> = urls.values().collect();
    assert_eq!(distinct.len(), 5, "{urls:?}");

    let ticks = procfs::ticks_per_second();
    let before = procfs::children(cluster.postmaster);
    let url = urls.values().next().unwrap();
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connects");
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("asks");
    let after = procfs::children(cluster.postmaster);
    assert!(!before.contains(&(backend as u32)));
    assert!(after.contains(&(backend as u32)), "{after:?}");

    // Work in the backend shows in the family's CPU, not in the postmaster's own.
    let family_before = cluster.sample(ticks).expect("sampled");
    let own_before = procfs::sample(cluster.postmaster, ticks).unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM generate_series(1, 3000000)")
        .fetch_one(&mut conn)
        .await
        .expect("counts");
    let family_after = cluster.sample(ticks).expect("sampled");
    let own_after = procfs::sample(cluster.postmaster, ticks).unwrap();
    let family = family_after.cpu_seconds - family_before.cpu_seconds;
    let own = own_after.cpu_seconds - own_before.cpu_seconds;
    assert!(
        family > own && family > 0.0,
        "family {family} s, own {own} s"
    );
    assert!(family_after.rss_kib > 0);

    // An ended backend's CPU stays counted, through the postmaster's count of ended children.
    conn.close().await.expect("closes");
    for _ in 0..100 {
        if !procfs::children(cluster.postmaster).contains(&(backend as u32)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ended = cluster.sample(ticks).expect("sampled");
    assert!(
        ended.cpu_seconds + 0.05 >= family_after.cpu_seconds,
        "{} s after the backend ended, {} s before",
        ended.cpu_seconds,
        family_after.cpu_seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_runs_on_postgres() {
    let cluster = Cluster::start().await.expect("PostgreSQL starts");
    let bench = BenchServer::start().await;
    let js = &bench.js;
    streams::provision(js, ProvisionOptions::default())
        .await
        .expect("streams provisioned");
    let database = cluster.database("floor").expect("a database");
    let (run, (), ()) = floor::run(js, &bench.floor_nats(), &database, 200, (16, 8), || ())
        .await
        .expect("the floor runs");
    assert_eq!(run.messages, 200);
    assert!(run.per_second > 0.0, "{run:?}");
}
