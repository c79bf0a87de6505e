//! `ridectl auth init`: the installation's NATS identities (see `ridesaga_schemas::auth`).

use anyhow::Context;
use ridesaga_schemas::auth;
use serde::Serialize;

use super::Ctx;
use crate::cli::AuthCommand;
use crate::output::Table;

#[derive(Debug, Serialize)]
struct MemberRow {
    identity: String,
    account: &'static str,
    public_key: String,
    seed_file: String,
    inbox_prefix: String,
    created: bool,
}

pub fn run(ctx: &Ctx, command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Init { dir } => {
            let installation = auth::init(&dir).with_context(|| {
                format!("could not write the identities into {}", dir.display())
            })?;
            let rows: Vec<MemberRow> = installation
                .members
                .iter()
                .map(|m| MemberRow {
                    identity: m.identity.name(),
                    account: m.identity.account(),
                    public_key: m.public_key.clone(),
                    seed_file: m.seed_file.display().to_string(),
                    inbox_prefix: m.identity.inbox_prefix(),
                    created: m.created,
                })
                .collect();
            if ctx.out.is_json() {
                return ctx.out.json(&serde_json::json!({
                    "server_config": installation.server_config().display().to_string(),
                    "identities": rows,
                }));
            }
            let mut table = Table::new(["IDENTITY", "ACCOUNT", "PUBLIC KEY", "SEED", "INBOX", ""]);
            for row in &rows {
                table.row([
                    row.identity.clone(),
                    row.account.to_owned(),
                    row.public_key.clone(),
                    row.seed_file.clone(),
                    row.inbox_prefix.clone(),
                    if row.created { "new" } else { "kept" }.to_owned(),
                ]);
            }
            ctx.out.table(&table);
            crate::output::note(format!(
                "the server includes {}",
                installation.server_config().display()
            ));
            Ok(())
        }
    }
}
