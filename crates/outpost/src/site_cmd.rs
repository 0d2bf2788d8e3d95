//! `outpost site ...`: a remote site's commands.

use crate::cli::SiteCommand;
use crate::input::{parse_json, read_password};
use crate::output::human_bytes;
use crate::progress;
use model::SiteId;
use std::time::Duration;
use store::{Db, StateKey, Write};

pub(crate) fn run(command: SiteCommand) -> Result<(), String> {
    use site::status::{self, SyncState};
    match command {
        SiteCommand::Init { data, central, site, password_file, ca_cert } => {
            let password = read_password(password_file.as_deref())?;
            let ca_pem = match &ca_cert {
                Some(file) => std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?,
                None => String::new(),
            };
            let report = site::initialise(&data.data, &central, &SiteId::new(&site), &password, &ca_pem)
                .map_err(|e| e.to_string())?;
            println!(
                "site `{site}` initialised against central server `{}`; run `outpost site sync` to receive its data",
                report.central
            );
        }
        SiteCommand::Import { file, data, site, central, ca_cert } => {
            let ca_pem = match &ca_cert {
                Some(file) => std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?,
                None => String::new(),
            };
            let bytes = std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let wanted = site.as_deref().map(SiteId::new);
            let report = site::import_seed(&data.data, &bytes, wanted.as_ref(), central.as_deref(), &ca_pem)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "site `{}` started from the seed file made at {}: {} record(s). Its next `outpost site sync` receives only what changed since",
                report.header.site, report.header.created_at, report.applied
            );
        }
        SiteCommand::Sync { data } => {
            let db = data.open()?;
            let client = client_for(&db)?;
            let mut bar = progress::Terminal::new(client.link().clone());
            let report = site::sync_once(&db, &client, &mut bar).map_err(|e| e.to_string());
            bar.finish();
            let report = report?;
            println!(
                "synced in {:.2?}: pushed {} ({} rejected), pulled {}; {} sent, {} received",
                report.duration,
                report.pushed,
                report.rejected,
                report.pulled,
                human_bytes(report.bytes_sent),
                human_bytes(report.bytes_received)
            );
            if report.confirmed > 0 {
                println!(
                    "{} change(s) sent by an earlier sync had arrived (its answer was lost on the way back): not sent again",
                    report.confirmed
                );
            }
            if report.rejected > 0 {
                println!("see `outpost site rejected` for the reasons");
            }
        }
        SiteCommand::Serve { data, listen, every } => {
            let db = data.open()?;
            let client = client_for(&db)?;
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("listening on {listen}: {e}"))?;
                println!(
                    "site API on http://{}, syncing every {every} s",
                    listener.local_addr().map_err(|e| e.to_string())?
                );
                site::local_api::serve(db, client, listener, Duration::from_secs(every))
                    .await
                    .map_err(|e| e.to_string())
            })?;
        }
        SiteCommand::Status { data } => {
            println!("{}", status::status(&*data.open()?).map_err(|e| e.to_string())?);
        }
        SiteCommand::Rejected { data } => {
            let rejected = status::rejected(&*data.open()?).map_err(|e| e.to_string())?;
            if rejected.is_empty() {
                println!("no rejected changes");
            }
            for r in rejected {
                println!("{}  {} `{}` (change {} from {}): {}", r.at, r.table, r.id, r.seq, r.from, r.reason);
            }
        }
        SiteCommand::ResetCursor { data } => {
            data.open()?.set_state(StateKey::PullCursor, "").map_err(|e| e.to_string())?;
            println!("the next sync pulls a fresh snapshot of everything this site holds");
        }
        SiteCommand::Pause { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Paused).map_err(|e| e.to_string())?
        }
        SiteCommand::Resume { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Active).map_err(|e| e.to_string())?
        }
        SiteCommand::Disable { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Disabled).map_err(|e| e.to_string())?
        }
        SiteCommand::Write { table, id, json, data } => {
            let doc = parse_json(&json)?;
            data.open()?.write(&[Write::upsert(&table, id.as_str(), &doc)]).map_err(|e| e.to_string())?;
        }
        SiteCommand::Merge { table, id, into, data } => {
            data.open()?.write(&[Write::merge(&table, id.as_str(), into.as_str())]).map_err(|e| e.to_string())?;
            println!("`{table}` `{id}` merged into `{into}`");
        }
        SiteCommand::Procurement { store, setting, data } => {
            let local = match setting.as_str() {
                "local" => true,
                "central" => false,
                other => return Err(format!("`{other}` is not a setting: use local or central")),
            };
            let row = serde_json::json!({"store_id": store, "on": local});
            data.open()?
                .write(&[Write::upsert("local_procurement", store.as_str(), &row)])
                .map_err(|e| e.to_string())?;
            if local {
                println!("purchase orders, tenders and quotes of store `{store}` are entered on this site from now on");
                println!(
                    "warning: the primary server may still give its users permissions for `{store}`; disable them there by hand \
                     (from the next sync the central server refuses the primary's purchase orders for `{store}`)"
                );
            } else {
                println!("purchase orders, tenders and quotes of store `{store}` are entered on the primary again");
            }
        }
        SiteCommand::Get { table, id, data } => match data.open()?.record(&table, &id).map_err(|e| e.to_string())? {
            Some(doc) => println!("{doc}"),
            None => return Err(format!("no `{table}` record `{id}` on this site")),
        },
    }
    Ok(())
}

fn client_for(db: &Db) -> Result<site::Client, String> {
    let get = |key: StateKey| {
        db.state(key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("this site has no `{key}`; run `outpost site init`"))
    };
    let client = site::Client::new(
        &get(StateKey::CentralUrl)?,
        &SiteId::new(get(StateKey::LocalSite)?),
        &get(StateKey::Password)?,
    );
    match db.state(StateKey::CaCertPem).map_err(|e| e.to_string())? {
        Some(pem) if !pem.is_empty() => client.trusting(pem.as_bytes()).map_err(|e| e.to_string()),
        _ => Ok(client),
    }
}
