//! The disk report after a run (`--storage-report`, Trellis only): as a server admin, compacts
//! the database through `POST /_trellis/admin/v1/storage/compact` and reports the bytes per
//! stored event and where the bytes go per table. Another server (no such endpoint) gets a
//! "not available" row and no failure.

use serde_json::Value;

use crate::{Options, client::Client, report::Report};

/// Tables listed one by one; the rest are summed.
const TABLES_SHOWN: usize = 12;

pub(crate) async fn storage_report(client: &Client, options: &Options, report: &mut Report) -> Result<(), String> {
    let admin_client = Client { admin_users: true, ..client.clone() };
    let admin = admin_client
        .register(&options.registration_secret, &format!("{}_storage_admin", options.prefix))
        .await
        .ok_or("registering the storage admin failed")?;
    eprintln!("compacting the database for the storage report");
    let response = client
        .http
        .post(format!("{}/_trellis/admin/v1/storage/compact", client.base))
        .bearer_auth(&admin.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        report.add("storage report", format!("not available ({})", response.status()));
        return Ok(());
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let stats: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let number = |value: &Value, key: &str| value[key].as_u64().unwrap_or(0);
    let (events, disk) = (number(&stats, "stored_events"), number(&stats, "disk_bytes"));
    let per_event = disk as f64 / events.max(1) as f64;
    report.add(
        "disk after compaction",
        format!("{:.1} MB for {events} stored events: {per_event:.0} bytes per event", disk as f64 / 1e6),
    );
    report.figure("disk after compaction", disk as f64 / 1e6, "MB");
    report.figure("disk bytes per stored event", per_event, "bytes");
    report.figure("stored events", events as f64, "events");
    let tables = stats["tables"].as_array().cloned().unwrap_or_default();
    for table in tables.iter().take(TABLES_SHOWN) {
        let name = table["table"].as_str().unwrap_or("?");
        let bytes = number(table, "disk_bytes");
        report.add(
            &format!("  table {name}"),
            format!(
                "{:.2} MB ({:.0}%, {:.0} bytes per event), {} keys",
                bytes as f64 / 1e6,
                100.0 * bytes as f64 / disk.max(1) as f64,
                bytes as f64 / events.max(1) as f64,
                number(table, "estimated_keys")
            ),
        );
        report.figure(&format!("disk bytes per event in {name}"), bytes as f64 / events.max(1) as f64, "bytes");
    }
    let rest: u64 = tables.iter().skip(TABLES_SHOWN).map(|t| number(t, "disk_bytes")).sum();
    report.add(
        "  other tables",
        format!("{:.2} MB in {} tables", rest as f64 / 1e6, tables.len().saturating_sub(TABLES_SHOWN)),
    );
    Ok(())
}
