//! Schema versioning: the database records the schema version and the server name it was made
//! for. Start-up refuses a database of another server name or a newer schema, and runs the
//! migrations from an older schema in order.

use super::{
    Batch, Db, StorageError,
    room_tables::{LEGACY_FORWARD_EXTREMITIES, ROOMS},
    tables::META,
};

/// The schema this build writes. Raise it with a migration in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 2;

/// Migration `i` upgrades a database from version `i + 1` to `i + 2`.
type Migration = fn(&Db) -> Result<(), StorageError>;
const MIGRATIONS: &[Migration] = &[extremities_into_room_records];

/// 1 -> 2: forward extremities move from rows of their own into each room's record.
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
