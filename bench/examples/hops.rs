//! Prints the saga stream's latency hop by hop (see `ridesaga_bench::hops`), for a running
//! server: `cargo run --release -p ridesaga-bench --example hops -- [NATS_URL] [FIRST_SEQUENCE]`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let first: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let hops = ridesaga_bench::hops::measure(&js, first).await?;
    print!("{}", ridesaga_bench::hops::table(&hops));
    Ok(())
}
