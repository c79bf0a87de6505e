//! One module per command group; [`run`] dispatches a parsed command line to it.

mod audit;
mod auth;
mod dlq;
mod driver;
mod earnings;
mod effects;
mod events;
mod follow;
mod leader;
mod position;
mod refund;
mod render;
mod review;
mod ride;
mod saga;
mod scale;
mod schedule;
mod services;
mod streams;
mod track;

use clap::CommandFactory;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::nats::{self, Nats};
use crate::output::Out;

/// What every command gets: the global options and where to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub global: GlobalArgs,
    pub out: Out,
}

impl Ctx {
    /// Connects to NATS with the global options.
    pub async fn connect(&self) -> anyhow::Result<Nats> {
        nats::connect(&self.global).await
    }
}

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        out: Out::detect(cli.global.output),
        global: cli.global,
    };
    match cli.command {
        Command::Driver(command) => driver::run(&ctx, command).await,
        Command::Ride(command) => ride::run(&ctx, command).await,
        Command::Fraud(command) => driver::run_fraud(&ctx, command).await,
        Command::Rider(command) => driver::run_rider(&ctx, command).await,
        Command::Saga(command) => saga::run(&ctx, command).await,
        Command::Streams => streams::streams(&ctx).await,
        Command::Consumers => streams::consumers(&ctx).await,
        Command::Events(command) => events::run(&ctx, command).await,
        Command::Services(args) => services::run(&ctx, args).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Provision(args) => streams::provision(&ctx, args).await,
        Command::StepDown(args) => leader::step_down(&ctx, args).await,
        Command::Dlq(command) => dlq::run(&ctx, command).await,
        Command::Scale(command) => scale::run(&ctx, command).await,
        Command::Auth(command) => auth::run(&ctx, command),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "ridectl", &mut script);
            ctx.out.raw(&script)
        }
    }
}
