//! `ridectl` with each of its identities against a server running the generated configuration:
//! `auth init` writes private seeds and a server file of public keys; the admin operates; the
//! viewer reads everything and publishes nothing (a command is refused by the server, with the
//! refusal on stderr); the provisioning identity provisions and does nothing else; the
//! viewer's seed without its inbox prefix cannot receive replies.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Harness, assert_code, json, run_ridectl, stderr, url_only};
use ridesaga_testkit::Identity;

const REQUEST: [&str; 11] = [
    "ride",
    "request",
    "--rider",
    "u_viewer",
    "--from",
    "52.5200,13.4050",
    "--to",
    "52.5100,13.4300",
    "--card",
    "tok_visa",
    "--connect-timeout=5s",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_init_writes_private_seeds_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let path = auth.display().to_string();
    let out = run_ridectl(&[], &["auth", "init", "--dir", &path, "-o", "json"]).await;
    assert_code(&out, 0);
    let report = json(&out);
    let identities = report["identities"].as_array().unwrap();
    assert_eq!(identities.len(), Identity::ALL.len());
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    for row in identities {
        let file = std::path::Path::new(row["seed_file"].as_str().unwrap());
        let seed = std::fs::read_to_string(file).unwrap();
        assert!(!printed.contains(seed.trim()), "a seed was printed");
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
        assert_eq!(row["created"], true);
    }
    let config = std::fs::read_to_string(auth.join("auth.conf")).unwrap();
    assert!(config.contains("RIDESAGA") && config.contains("system_account: SYS"));

    let again = json(&run_ridectl(&[], &["auth", "init", "--dir", &path, "-o", "json"]).await);
    for (first, second) in identities
        .iter()
        .zip(again["identities"].as_array().unwrap())
    {
        assert_eq!(first["public_key"], second["public_key"], "seeds are kept");
        assert_eq!(second["created"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_reads_everything_and_a_command_of_its_is_refused() {
    let h = Harness::provisioned().await;
    let out = h.ridectl(&REQUEST[..10]).await;
    assert_code(&out, 0);
    let ride = json(&out)["ride_id"].as_str().unwrap().to_owned();

    for args in [
        &["streams"][..],
        &["consumers"],
        &["saga", "list"],
        &["saga", "trace", &ride],
        &["ride", "show", &ride],
        &["events", "tail", "--no-follow", "--since", "1h"],
        &["audit"],
        &["dlq", "list"],
        &["services", "--wait", "200ms"],
    ] {
        let out = h.ridectl_as(Identity::Viewer, args).await;
        assert_code(&out, 0);
        assert!(
            !stderr(&out).contains("Permissions Violation"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    let before = h.saga_messages().await;
    let out = h.ridectl_as(Identity::Viewer, &REQUEST).await;
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("Permissions Violation for Publish to \"cmd.ride.request."),
        "{err}"
    );
    let out = h
        .ridectl_as(Identity::Viewer, &["ride", "cancel", &ride])
        .await;
    assert_code(&out, 1);
    let out = h.ridectl_as(Identity::Viewer, &["provision"]).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("Permissions Violation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        h.saga_messages().await,
        before,
        "the viewer published nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioning_identity_provisions_and_does_nothing_else() {
    let h = Harness::bare().await;
    let out = h.ridectl_as(Identity::Provision, &["provision"]).await;
    assert_code(&out, 0);
    assert_eq!(h.saga_messages().await, 0);
    let out = h.ridectl_as(Identity::Provision, &REQUEST).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("Permissions Violation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.saga_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_without_its_inbox_prefix_gets_no_replies_and_no_seed_gets_nothing() {
    let h = Harness::provisioned().await;
    // The viewer's seed with the default prefix: the server refuses the reply subscription.
    let env: Vec<(String, String)> = h
        .server
        .env(Identity::Viewer)
        .into_iter()
        .filter(|(name, _)| name != "NATS_INBOX_PREFIX")
        .collect();
    let out = run_ridectl(&env, &["streams"]).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("Permissions Violation for Subscription to \"_INBOX."),
        "{}",
        stderr(&out)
    );

    let out = run_ridectl(&url_only(&h.url()), &["streams"]).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("authorization violation"),
        "{}",
        stderr(&out)
    );
}
