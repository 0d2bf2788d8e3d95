//! `outpost central ...`: the central server's commands.

use crate::cli::{
    CentralAdminCommand, CentralCommand, CentralDb, CentralPatientCommand, CentralSiteCommand, CentralStoreCommand,
};
use crate::input::{parse_json, read_admin_password};
use crate::output::announce;
use model::{RecordId, SiteId, StoreId, SyncType};
use std::net::SocketAddr;
use std::path::Path;
use store::Write;

pub(crate) fn run(command: CentralCommand) -> Result<(), String> {
    use central::admin;
    let engine = |data: &CentralDb| data.open().map(central::Engine::new);
    match command {
        CentralCommand::Init { data, name, primary, admin_password_file } => {
            // Asked first, so that nothing is created without an administrator.
            let admin_password = read_admin_password(admin_password_file.as_deref())?;
            let db = data.open_or_create(true)?;
            admin::init(&db, &SiteId::new(&name), primary.map(SiteId::new).as_ref()).map_err(|e| e.to_string())?;
            admin::set_admin_password(&db, &admin_password).map_err(|e| e.to_string())?;
            println!("central server `{name}` created in {}", data.describe());
            println!(
                "administrator password set: `outpost central serve` asks for it at /login before it shows the dashboard"
            );
        }
        CentralCommand::Admin(CentralAdminCommand::SetPassword { data, admin_password_file }) => {
            let admin_password = read_admin_password(admin_password_file.as_deref())?;
            let db = data.open()?;
            db.local_site().map_err(|e| format!("{}: {e}", data.describe()))?;
            admin::set_admin_password(&db, &admin_password).map_err(|e| e.to_string())?;
            println!("administrator password set for {}; every open dashboard session has ended", data.describe());
        }
        CentralCommand::Serve { data, listen, dashboard_listen, tls_cert: Some(cert), tls_key: Some(key), limits } => {
            serve_tls(engine(&data)?, listen, dashboard_listen, &cert, &key, limits.limits())?;
        }
        CentralCommand::Serve { data, listen, dashboard_listen, limits, .. } => {
            let engine = engine(&data)?;
            let limits = limits.limits();
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let bind = |addr: SocketAddr| async move {
                    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listening on {addr}: {e}"))
                };
                let listener = bind(listen).await?;
                let dashboard = match dashboard_listen {
                    Some(addr) => Some(bind(addr).await?),
                    None => None,
                };
                let local = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
                let sync_addr = local(&listener)?;
                let dashboard_addr = dashboard.as_ref().map_or(Ok(sync_addr), local)?;
                announce(&format!(
                    "central server listening on http://{sync_addr}\ndashboard on http://{dashboard_addr}/\n"
                ));
                match dashboard {
                    None => central::serve(engine, listener, limits).await.map_err(|e| e.to_string()),
                    Some(dashboard) => central::server::serve_apart(engine, listener, dashboard, limits)
                        .await
                        .map_err(|e| e.to_string()),
                }
            })?;
        }
        CentralCommand::Site(CentralSiteCommand::Add { name, mobile, data }) => {
            let password = admin::add_site(&engine(&data)?, &SiteId::new(&name), mobile).map_err(|e| e.to_string())?;
            println!("site `{name}` added. Its password (shown once, keep it safe):\n{password}");
        }
        CentralCommand::Site(CentralSiteCommand::List { data }) => {
            let sites = admin::list_sites(&engine(&data)?).map_err(|e| e.to_string())?;
            print!("{}", site_list(&sites));
        }
        CentralCommand::Site(CentralSiteCommand::Disable { name, data }) => {
            admin::set_site_disabled(&engine(&data)?, &SiteId::new(&name), true).map_err(|e| e.to_string())?;
            println!("site `{name}` is disabled: its syncs are refused until `outpost central site enable {name}`; everything it synced is kept");
        }
        CentralCommand::Site(CentralSiteCommand::Enable { name, data }) => {
            admin::set_site_disabled(&engine(&data)?, &SiteId::new(&name), false).map_err(|e| e.to_string())?;
            println!("site `{name}` is enabled: its next sync goes on where it stopped");
        }
        CentralCommand::Site(CentralSiteCommand::Remove { name, data }) => {
            let held = admin::remove_site(&engine(&data)?, &SiteId::new(&name)).map_err(|e| e.to_string())?;
            let copies = if held.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = held.iter().map(|s| format!("`{s}`")).collect();
                format!("; it no longer holds copies of {}", names.join(", "))
            };
            println!("site `{name}` removed: its password no longer works{copies}. The records it synced stay on the central server");
        }
        CentralCommand::Site(CentralSiteCommand::Export { name, out, central_url, data }) => {
            let (bytes, header) =
                admin::export_seed(&engine(&data)?, &SiteId::new(&name), &central_url).map_err(|e| e.to_string())?;
            std::fs::write(&out, &bytes).map_err(|e| format!("writing {}: {e}", out.display()))?;
            println!(
                "seed file for site `{name}` written to {}: {} record(s), {} bytes, valid until {}.\n\
                 It holds a new password for `{name}` (the old one no longer works): keep it as you would the password.\n\
                 On the site: outpost site import {} --data DIR",
                out.display(),
                header.records,
                bytes.len(),
                header.expires_at,
                out.display()
            );
        }
        CentralCommand::Site(CentralSiteCommand::ResetPassword { name, data }) => {
            let password = admin::reset_password(&engine(&data)?, &SiteId::new(&name)).map_err(|e| e.to_string())?;
            println!("new password for `{name}` (shown once):\n{password}");
        }
        CentralCommand::Site(CentralSiteCommand::Unbind { name, data }) => {
            if !data.open()?.unbind_machine(&SiteId::new(&name)).map_err(|e| e.to_string())? {
                return Err(format!("there is no site `{name}`"));
            }
            println!(
                "site `{name}` is no longer bound to a machine; its next sync binds it to the machine it comes from"
            );
        }
        CentralCommand::Site(CentralSiteCommand::Rejected { name, clear, data }) => {
            let db = data.open()?;
            let open = db.open_rejections(&SiteId::new(&name)).map_err(|e| e.to_string())?;
            for r in &open {
                println!("{}  {} `{}` (change {}): {}", r.at, r.table, r.id, r.seq, r.reason);
            }
            let quarantined = open.len() as u64 >= central::engine::MAX_OPEN_REJECTIONS;
            match (open.len(), clear) {
                (0, _) => println!("no refused changes of `{name}` wait for an administrator"),
                (n, false) => println!(
                    "{n} refused change(s) of `{name}` wait for an administrator{}; `--clear` marks them as looked at (they are kept)",
                    if quarantined { " (the site is quarantined: its pushes are refused)" } else { "" }
                ),
                (_, true) => {
                    let cleared = db.resolve_rejections(&SiteId::new(&name)).map_err(|e| e.to_string())?;
                    println!("{cleared} refused change(s) of `{name}` marked as looked at (kept); its pushes are accepted again");
                }
            }
        }
        CentralCommand::Store(CentralStoreCommand::Add { name, active_on, dispensary, data }) => {
            admin::add_store(&engine(&data)?, &StoreId::new(&name), &SiteId::new(&active_on), dispensary)
                .map_err(|e| e.to_string())?;
            println!("store `{name}` added, active on `{active_on}`");
        }
        CentralCommand::Store(CentralStoreCommand::List { data }) => {
            print!("{}", store_list(&admin::list_stores(&engine(&data)?)));
        }
        CentralCommand::Store(CentralStoreCommand::Move { store, to, leave_as, force, data }) => {
            let leave = SyncType::parse(&leave_as).ok_or_else(|| {
                format!("`{leave_as}` is not a sync type: leave the store as none, transfer or collector")
            })?;
            let outcome = admin::move_store(&engine(&data)?, &StoreId::new(&store), &SiteId::new(&to), leave, force)
                .map_err(|e| e.to_string())?;
            match outcome {
                admin::StoreMoveOutcome::Pending { old_site } => println!(
                    "store `{store}` is moving to `{to}`. On its next sync, site `{old_site}` pushes everything it has for the store and hands it over \
                     (the store is read-only there from then on); then `{to}` receives the store on its next sync. \
                     `outpost central store list` shows how the move stands"
                ),
                admin::StoreMoveOutcome::Done { records } => println!(
                    "store `{store}` is now active on `{to}`; it receives the store's {records} current record(s) on its next sync"
                ),
                admin::StoreMoveOutcome::Forced { records, old_site, last_push_at, acked, waiting_to_push } => println!(
                    "store `{store}` is now active on `{to}` without a hand-over by `{old_site}`: everything the central server held is kept \
                     and {records} record(s) go to `{to}`. What `{old_site}` entered after its last push ({}, up to its change {}) is not on the \
                     central server{}; if that site ever syncs again, its changes to the store are refused and kept for review",
                    last_push_at.as_deref().unwrap_or("never"),
                    acked.0,
                    match waiting_to_push {
                        Some(0) => " (at its last pull it had nothing left to push)".to_owned(),
                        Some(n) => format!(" (at its last pull it still had {n} change(s) to push, of any store)"),
                        None => String::new(),
                    }
                ),
            }
        }
        CentralCommand::Store(CentralStoreCommand::SyncType { store, site, sync_type, data }) => {
            let sync = SyncType::parse(&sync_type)
                .ok_or_else(|| format!("`{sync_type}` is not a sync type: use active, collector, transfer or none"))?;
            admin::set_sync_type(&engine(&data)?, &StoreId::new(&store), &SiteId::new(&site), sync)
                .map_err(|e| e.to_string())?;
            println!("store `{store}` is now `{}` on `{site}`", sync.as_str());
        }
        CentralCommand::Store(CentralStoreCommand::IncludeTransactions { store, setting, data }) => {
            let include = match setting.as_str() {
                "on" => true,
                "off" => false,
                other => return Err(format!("`{other}` is not a setting: use on or off")),
            };
            admin::set_include_transactions(&engine(&data)?, &StoreId::new(&store), include)
                .map_err(|e| e.to_string())?;
            if include {
                println!("store `{store}` now includes its transactions in sync: its site sends what it holds on its next syncs");
            } else {
                println!(
                    "store `{store}` no longer includes its transactions in sync: from now on they stay on its site"
                );
            }
        }
        CentralCommand::Patient(CentralPatientCommand::Move { patient, to, data }) => {
            let outcome = admin::move_patient(&engine(&data)?, &RecordId::new(&patient), &StoreId::new(&to))
                .map_err(|e| e.to_string())?;
            match outcome {
                admin::MoveOutcome::Done => println!("`{patient}` now has home store `{to}`"),
                admin::MoveOutcome::Pending { old_site } => println!(
                    "`{patient}` is moving to home store `{to}`; it is read-only everywhere until site `{old_site}` next syncs, which hands it over"
                ),
            }
        }
        CentralCommand::ShowName { name, store, data } => {
            admin::show_name(&engine(&data)?, &RecordId::new(&name), &StoreId::new(&store))
                .map_err(|e| e.to_string())?;
        }
        CentralCommand::ShowItem { item, store, data } => {
            admin::show_item(&engine(&data)?, &RecordId::new(&item), &StoreId::new(&store))
                .map_err(|e| e.to_string())?;
        }
        CentralCommand::Write { table, id, json, data } => {
            let doc = parse_json(&json)?;
            engine(&data)?.write(&[Write::upsert(&table, id.as_str(), &doc)]).map_err(|e| e.to_string())?;
        }
        CentralCommand::Merge { table, id, into, data } => {
            engine(&data)?.write(&[Write::merge(&table, id.as_str(), into.as_str())]).map_err(|e| e.to_string())?;
            println!("`{table}` `{id}` merged into `{into}`");
        }
        CentralCommand::SetPrimary { site, data } => {
            match admin::set_primary(&engine(&data)?, &SiteId::new(&site)).map_err(|e| e.to_string())? {
                admin::PrimaryOutcome::Done => println!(
                    "`{site}` is now the primary: central data is edited there, and reaches every site through this central server"
                ),
                admin::PrimaryOutcome::Pending { old_primary } => println!(
                    "the primary is changing to `{site}`: on its next sync `{old_primary}` pushes its edits and hands over; until then it stays the primary"
                ),
            }
        }
        CentralCommand::Status { data } => {
            let view = central::dashboard::view(&engine(&data)?, &Default::default()).map_err(|e| e.to_string())?;
            println!("central `{}`, primary `{}`", view.central, view.primary);
            for s in &view.sites {
                println!(
                    "  {:<16} {:<8} last push {:<24} last pull {:<24} rejected {}{}",
                    s.site,
                    s.kind,
                    s.last_push_at.as_deref().unwrap_or("never"),
                    s.last_pull_at.as_deref().unwrap_or("never"),
                    s.rejections,
                    if s.stale {
                        "  (no sync for over a month)"
                    } else if s.never_synced {
                        "  (never synced yet)"
                    } else {
                        ""
                    }
                );
            }
            for m in &view.moves {
                println!(
                    "  patient move pending: `{}` from `{}` to `{}`, since {}; completes when site `{}` next syncs",
                    m.patient, m.from, m.to, m.requested_at, m.waits_for
                );
            }
            if let Some(m) = &view.primary_move {
                println!(
                    "  primary changing from `{}` to `{}`, since {}; completes when `{}` next syncs",
                    m.0, m.1, m.2, m.0
                );
            }
            for m in &view.store_moves {
                println!(
                    "  store move {}: `{}` from `{}` to `{}`, since {}; completes when site `{}` next syncs",
                    m.status.replace('_', " "),
                    m.store,
                    m.from,
                    m.to,
                    m.requested_at,
                    m.from
                );
            }
        }
    }
    Ok(())
}

/// `central store list`: a line per store, and its move if one is under way.
pub(crate) fn store_list(stores: &[central::admin::StoreListing]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if stores.is_empty() {
        out.push_str("no stores yet; add one with `outpost central store add NAME --active-on SITE`\n");
    }
    for s in stores {
        let held: Vec<String> = s.held_by.iter().map(|(site, sync)| format!("{site} ({})", sync.as_str())).collect();
        let kind = if s.dispensary { ", dispensary" } else { "" };
        let _ = writeln!(out, "{}  active on {}{kind}; also held by {}", s.store, s.active_on, held.join(", "));
        if let Some(m) = &s.moving {
            let stage = match m.status {
                model::MoveStatus::Pending => format!("waits for `{}` to sync and hand it over", m.from),
                model::MoveStatus::HandedOver => format!("handed over by `{}`; completing", m.from),
            };
            let _ = writeln!(
                out,
                "  MOVING to {} (leaving {} on {}) since {}: {stage}",
                m.to,
                m.leave_as.as_str(),
                m.from,
                m.requested_at
            );
        }
    }
    out
}

/// `central site list`: a block per site.
pub(crate) fn site_list(sites: &[central::admin::SiteListing]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if sites.is_empty() {
        out.push_str("no sites yet; add one with `outpost central site add NAME`\n");
    }
    for s in sites {
        let state = match &s.disabled_at {
            Some(at) => format!("  DISABLED since {at}"),
            None => String::new(),
        };
        let _ = writeln!(out, "{} ({}){state}", s.site, s.kind);
        let stores: Vec<String> = s.stores.iter().map(|(store, sync)| format!("{store} ({})", sync.as_str())).collect();
        let _ = writeln!(out, "  stores:    {}", if stores.is_empty() { "none".to_owned() } else { stores.join(", ") });
        let _ = writeln!(out, "  last push: {}", s.last_push_at.as_deref().unwrap_or("never"));
        let _ = writeln!(out, "  last pull: {}", s.last_pull_at.as_deref().unwrap_or("never"));
        let owed = match s.owed {
            Some(n) => format!("{n} change(s) wait for the site"),
            None => "not known until the site has pulled once".to_owned(),
        };
        let _ = writeln!(out, "  owed:      {owed}");
        let owes = match s.waiting_to_push {
            Some(n) => format!("{n} change(s) still to push, as the site said at its last pull"),
            None => "not known until the site has pulled once".to_owned(),
        };
        let _ = writeln!(out, "  owes:      {owes}");
        if s.open_rejections > 0 {
            let _ = writeln!(
                out,
                "  refused:   {} change(s) wait for an administrator (`outpost central site rejected {}`)",
                s.open_rejections, s.site
            );
        }
    }
    out
}

#[cfg(feature = "tls")]
fn serve_tls(
    engine: central::Engine,
    listen: SocketAddr,
    dashboard_listen: Option<SocketAddr>,
    cert: &Path,
    key: &Path,
    limits: central::Limits,
) -> Result<(), String> {
    let bind = |addr: SocketAddr| std::net::TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"));
    let listener = bind(listen)?;
    let dashboard = dashboard_listen.map(bind).transpose()?;
    let sync_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dashboard_addr = dashboard.as_ref().map_or(Ok(sync_addr), |d| d.local_addr()).map_err(|e| e.to_string())?;
    announce(&format!("central server listening on https://{sync_addr}\ndashboard on https://{dashboard_addr}/\n"));
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(central::serve_tls(engine, listener, dashboard, cert, key, limits))
        .map_err(|e| format!("serving HTTPS: {e}"))
}

#[cfg(not(feature = "tls"))]
fn serve_tls(
    _engine: central::Engine,
    _listen: SocketAddr,
    _dashboard_listen: Option<SocketAddr>,
    _cert: &Path,
    _key: &Path,
    _limits: central::Limits,
) -> Result<(), String> {
    Err("this outpost was built without TLS; build it with `--features tls`".into())
}
