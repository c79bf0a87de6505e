//! The payment worker binary: configuration from the environment, then the shared runtime.

fn main() -> std::process::ExitCode {
    ridesaga_workers::app::main(ridesaga_schemas::Service::Payment)
}
