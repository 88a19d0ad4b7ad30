//! Schema versioning: the database records the schema version and the server name it was made
//! for. Start-up refuses a database of another server name or a newer schema, and runs the
//! migrations from an older schema in order.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Batch, Db, ScanDirection, StorageError, Table, ValueCodec,
    room_tables::{
        AUTH_EDGES, CURRENT_STATE, LEGACY_AUTH_CHAINS, LEGACY_FORWARD_EXTREMITIES, PDUS, ROOM_SERVERS, ROOMS,
        SHORT_EVENT_IDS, STATE_KEYS, TIMELINE, TIMELINE_BY_TS,
    },
    search_tables::{
        SEARCH_POSTINGS, USER_DIRECTORY, USER_DIRECTORY_WORDS, directory_keys, event_postings, user_words,
    },
    tables::{META, PROFILE_FIELDS, USERS},
};

/// The schema this build writes. Raise it with a migration in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 5;

/// Migration `i` upgrades a database from version `i + 1` to `i + 2`. A migration may be cut
/// short by a crash and run again from the start, so each must be idempotent.
type Migration = fn(&Db) -> Result<(), StorageError>;
const MIGRATIONS: &[Migration] =
    &[to_schema_2, to_schema_3, super::relations_migration::index_relations, count_room_servers];

/// 1 -> 2: the event writer's new layout (forward extremities in room records, auth chains as
/// edges, the timestamp index).
fn to_schema_2(db: &Db) -> Result<(), StorageError> {
    extremities_into_room_records(db)?;
    auth_edges_and_timestamp_index(db)
}

/// 2 -> 3: the search index of the room events already stored, and the user directory of the
/// accounts already registered.
fn to_schema_3(db: &Db) -> Result<(), StorageError> {
    #[derive(Deserialize)]
    struct Indexed {
        #[serde(rename = "type")]
        kind: String,
        content: Box<RawValue>,
    }
    for_each_timeline_event(db, |batch, (room, position), short, json| {
        // An event whose JSON lacks a type or content has nothing to index.
        let Ok(event) = serde_json::from_str::<Indexed>(json.get()) else { return Ok(()) };
        for (token, posting) in event_postings(&event.kind, &event.content, short) {
            batch.put(&SEARCH_POSTINGS, &(room, db.term(&token), position), &posting)?;
        }
        Ok(())
    })?;
    let mut batch = Batch::new();
    for (user, _) in USERS.all(db)? {
        let name = PROFILE_FIELDS.get(db, &(user.clone(), "displayname".to_owned()))?;
        let words = user_words(user.as_str(), name.as_ref().and_then(|n| n.as_str()));
        for word in directory_keys(db, &words) {
            batch.put(&USER_DIRECTORY_WORDS, &(word, user.to_string()), &())?;
        }
        batch.put(&USER_DIRECTORY, &user, &crate::storage::search_tables::DirectoryEntry { words })?;
    }
    db.write(batch)
}

/// 4 -> 5: how many users of each server are joined to each room (`room_servers`), counted
/// from the rooms' current state. Each room's rows are replaced whole, so a rerun is harmless.
fn count_room_servers(db: &Db) -> Result<(), StorageError> {
    #[derive(Deserialize)]
    struct Member {
        membership: String,
    }
    #[derive(Deserialize)]
    struct Fields {
        content: Member,
    }
    for (short_room, _) in ROOMS.all(db)? {
        let mut batch = Batch::new();
        for (key, _) in ROOM_SERVERS.scan_prefix(db, &(short_room,))? {
            batch.delete(&ROOM_SERVERS, &key);
        }
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for ((_, key), event) in CURRENT_STATE.scan_prefix(db, &(short_room,))? {
            let Some((kind, state_key)) = STATE_KEYS.get(db, &key)? else { continue };
            let Ok(user) = ruma::UserId::parse(state_key.as_str()) else { continue };
            let joined = kind == "m.room.member"
                && PDUS.get(db, &event)?.is_some_and(|json| {
                    serde_json::from_str::<Fields>(json.get()).is_ok_and(|f| f.content.membership == "join")
                });
            if joined {
                *counts.entry(user.server_name().to_string()).or_default() += 1;
            }
        }
        for (server, count) in counts {
            batch.put(&ROOM_SERVERS, &(short_room, server), &count)?;
        }
        db.write(batch)?;
    }
    Ok(())
}

/// Forward extremities move from rows of their own into each room's record.
fn extremities_into_room_records(db: &Db) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    for (short_room, mut record) in ROOMS.all(db)? {
        for ((_, extremity), ()) in LEGACY_FORWARD_EXTREMITIES.scan_prefix(db, &(short_room,))? {
            if !record.extremities.contains(&extremity) {
                record.extremities.push(extremity);
            }
            batch.delete(&LEGACY_FORWARD_EXTREMITIES, &(short_room, extremity));
        }
        batch.put(&ROOMS, &short_room, &record)?;
    }
    db.write(batch)
}

const KEY_VERSION: &str = "schema_version";
const KEY_SERVER_NAME: &str = "server_name";

pub(super) fn check_and_migrate(db: &Db, server_name: &str) -> Result<(), StorageError> {
    let stored_name = META.get(db, &KEY_SERVER_NAME.to_owned())?;
    let stored_version = META.get(db, &KEY_VERSION.to_owned())?;
    match (stored_name, stored_version) {
        (None, None) => {
            let mut batch = Batch::new();
            batch.put(&META, &KEY_SERVER_NAME.to_owned(), &server_name.into())?;
            batch.put(&META, &KEY_VERSION.to_owned(), &SCHEMA_VERSION.into())?;
            db.write(batch)
        }
        (Some(name), Some(version)) => {
            let name = name.as_str().unwrap_or_default().to_owned();
            if name != server_name {
                return Err(StorageError(format!(
                    "this database belongs to server_name \"{name}\", but the config says \
                     \"{server_name}\"; a server name cannot change, so use another database_path"
                )));
            }
            let version = version.as_u64().ok_or_else(|| StorageError("schema_version is not a number".into()))?;
            if version > SCHEMA_VERSION {
                return Err(StorageError(format!(
                    "this database has schema version {version}, made by a newer Trellis; this \
                     build understands up to {SCHEMA_VERSION}. Run the newer build."
                )));
            }
            if version == 0 {
                return Err(StorageError("schema_version 0 is not valid; the database is damaged".into()));
            }
            for from in version..SCHEMA_VERSION {
                let migrate = MIGRATIONS
                    .get((from - 1) as usize)
                    .ok_or_else(|| StorageError(format!("no migration from schema {from}")))?;
                migrate(db)?;
                let mut batch = Batch::new();
                batch.put(&META, &KEY_VERSION.to_owned(), &(from + 1).into())?;
                db.write(batch)?;
                tracing::info!(from, to = from + 1, "migrated database schema");
            }
            Ok(())
        }
        _ => {
            Err(StorageError("the database's meta table is incomplete (server_name or schema_version missing)".into()))
        }
    }
}

/// Rows a migration reads and writes per batch.
const MIGRATION_PAGE: usize = 1_000;

/// Calls `each` for every entry of a table keyed by u64, a page at a time, writing what it puts
/// in the batch after each page.
fn for_each_page<V: ValueCodec>(
    db: &Db,
    table: &Table<u64, V>,
    mut each: impl FnMut(&mut Batch, u64, V) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut cursor = 0;
    loop {
        let page = table.scan_from(db, &cursor, ScanDirection::Forward, MIGRATION_PAGE, |_| true)?;
        let Some(&(last, _)) = page.last() else { return Ok(()) };
        let full = page.len() == MIGRATION_PAGE;
        let mut batch = Batch::new();
        for (key, value) in page {
            each(&mut batch, key, value)?;
        }
        db.write(batch)?;
        match last.checked_add(1) {
            Some(next) if full => cursor = next,
            _ => return Ok(()),
        }
    }
}

/// Calls `each` for every timeline event ((room, position), short id, stored PDU), in
/// timeline order a page at a time, writing what it puts in the batch after each page. Timeline
/// rows whose PDU is missing are skipped.
fn for_each_timeline_event(
    db: &Db,
    mut each: impl FnMut(&mut Batch, (u64, u64), u64, &RawValue) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut cursor = (0, 0);
    loop {
        let page = TIMELINE.scan_from(db, &cursor, ScanDirection::Forward, MIGRATION_PAGE, |_| true)?;
        let Some(&((room, position), _)) = page.last() else { return Ok(()) };
        let mut batch = Batch::new();
        for (key, short) in &page {
            let Some(json) = PDUS.get(db, short)? else { continue };
            each(&mut batch, *key, *short, &json)?;
        }
        db.write(batch)?;
        if page.len() < MIGRATION_PAGE {
            return Ok(());
        }
        cursor = match position.checked_add(1) {
            Some(next) => (room, next),
            None => (room.saturating_add(1), 0),
        };
    }
}

/// The fields of a stored PDU the schema 2 migration reads.
#[derive(Deserialize)]
struct PduRefs {
    #[serde(default)]
    auth_events: Vec<EventRef>,
    #[serde(default)]
    origin_server_ts: u64,
}

/// An `auth_events` entry: an ID (room v3+) or an `[id, {hashes}]` pair (v1, v2).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(String),
    Pair(String, serde::de::IgnoredAny),
}

fn pdu_refs(short: u64, json: &RawValue) -> Result<PduRefs, StorageError> {
    serde_json::from_str(json.get()).map_err(|e| StorageError(format!("stored event {short} is unreadable: {e}")))
}

/// Schema 1 -> 2: auth chains are computed from the auth DAG's edges instead of stored whole,
/// and `/timestamp_to_event` reads a timestamp index. Fills `auth_edges` from every stored
/// PDU's `auth_events`, fills `timeline_by_ts` from the timeline, then deletes the old
/// `auth_chains` rows (the table stays, empty).
fn auth_edges_and_timestamp_index(db: &Db) -> Result<(), StorageError> {
    for_each_page(db, &PDUS, |batch, short, json| {
        let mut edges = Vec::new();
        for auth in pdu_refs(short, &json)?.auth_events {
            let (EventRef::Id(id) | EventRef::Pair(id, _)) = auth;
            // An event is accepted only after its auth events, so each has a short id.
            edges.extend(SHORT_EVENT_IDS.get(db, &id)?);
        }
        edges.sort_unstable();
        edges.dedup();
        batch.put(&AUTH_EDGES, &short, &edges)
    })?;
    for_each_timeline_event(db, |batch, (room, position), short, json| {
        let ts = pdu_refs(short, json)?.origin_server_ts;
        batch.put(&TIMELINE_BY_TS, &(room, ts, position), &short)
    })?;
    for_each_page(db, &LEGACY_AUTH_CHAINS, |batch, short, _| {
        batch.delete(&LEGACY_AUTH_CHAINS, &short);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeSet, HashMap},
        sync::Arc,
    };

    use rand::{SeedableRng, rngs::StdRng};
    use serde_json::json;

    use super::*;
    use crate::{
        service::rooms::auth_chain::{
            AuthChains,
            tests::{brute_chain, random_dag},
        },
        storage::memory::MemoryEngine,
    };

    /// A schema 1 database (events with full stored auth chains, a timeline), migrated: the
    /// chains computed from the new edges equal the old stored ones, the timestamp index holds
    /// every timeline event, and the old rows are gone.
    #[test]
    fn migration_to_2_builds_edges_and_the_timestamp_index() {
        let db = Db::with_engine(Arc::new(MemoryEngine::default()));
        let mut rng = StdRng::seed_from_u64(3);
        // More events than a migration page, so paging is exercised.
        let dag = random_dag(&mut rng, 2_500);
        let edges: HashMap<u64, Vec<u64>> = dag.iter().cloned().collect();
        let mut batch = Batch::new();
        batch.put(&META, &KEY_SERVER_NAME.to_owned(), &"localhost".into()).unwrap();
        batch.put(&META, &KEY_VERSION.to_owned(), &1.into()).unwrap();
        for (event, parents) in &dag {
            let id = |e: u64| format!("$event{e}");
            // Old room versions list auth events as [id, hashes] pairs; newer ones as IDs.
            let auth: Vec<serde_json::Value> = parents
                .iter()
                .map(|p| if event % 2 == 0 { json!(id(*p)) } else { json!([id(*p), {"sha256": "x"}]) })
                .collect();
            let pdu = json!({"type": "m.room.message", "auth_events": auth, "origin_server_ts": 1_000 + event % 7});
            batch.put(&PDUS, event, &serde_json::value::to_raw_value(&pdu).unwrap()).unwrap();
            batch.put(&SHORT_EVENT_IDS, &id(*event), event).unwrap();
            batch.put(&LEGACY_AUTH_CHAINS, event, &brute_chain(&edges, parents)).unwrap();
            // Two rooms' timelines.
            batch.put(&TIMELINE, &(event % 2, *event), event).unwrap();
        }
        db.write(batch).unwrap();

        check_and_migrate(&db, "localhost").unwrap();
        assert_eq!(META.get(&db, &KEY_VERSION.to_owned()).unwrap(), Some(json!(SCHEMA_VERSION)));

        let chains = AuthChains::new();
        for (event, parents) in &dag {
            assert_eq!(AUTH_EDGES.get(&db, event).unwrap().as_ref(), Some(parents), "edges of {event}");
            let expected = brute_chain(&edges, parents);
            assert_eq!(&chains.chain(&db, *event).unwrap()[..], expected.as_slice(), "chain of {event}");
        }
        assert!(LEGACY_AUTH_CHAINS.all(&db).unwrap().is_empty());
        let index: BTreeSet<(u64, u64, u64, u64)> =
            TIMELINE_BY_TS.all(&db).unwrap().into_iter().map(|((r, ts, p), e)| (r, ts, p, e)).collect();
        let expected: BTreeSet<(u64, u64, u64, u64)> =
            dag.iter().map(|(e, _)| (e % 2, 1_000 + e % 7, *e, *e)).collect();
        assert_eq!(index, expected);

        // Running it again (as after a crash mid-way) changes nothing.
        auth_edges_and_timestamp_index(&db).unwrap();
        assert_eq!(TIMELINE_BY_TS.all(&db).unwrap().len(), dag.len());
        assert_eq!(AUTH_EDGES.all(&db).unwrap().len(), dag.len());
    }
}
