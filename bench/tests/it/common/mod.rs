//! The bench's own nats-server (`ridesaga_bench::server`: the repository's `nats.conf` with an
//! installation's identities and the bench's user), as a run starts it.

use std::path::Path;

use async_nats::jetstream;
use ridesaga_bench::process::PidLog;
use ridesaga_bench::server::Server;
use tempfile::TempDir;

/// A started server in its own temporary directory, and the bench's connection to it.
pub struct BenchServer {
    pub server: Server,
    pub js: jetstream::Context,
    _dir: TempDir,
}

impl BenchServer {
    pub async fn start() -> BenchServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = ridesaga_testkit::find_nats_server().expect("a nats-server binary");
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats.conf");
        let server = Server::start(&binary, &conf, dir.path(), &PidLog::new(None))
            .await
            .expect("nats-server starts");
        let js = jetstream::new(server.connect().await.expect("the bench connects"));
        BenchServer {
            server,
            js,
            _dir: dir,
        }
    }

    /// The NATS settings of the floor's runtime: the bench's own user.
    pub fn floor_nats(&self) -> Vec<(String, String)> {
        let mut nats = vec![("NATS_URL".to_owned(), self.server.url())];
        nats.extend(self.server.identities.bench_env());
        nats
    }
}
