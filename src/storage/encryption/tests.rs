//! Unit tests of encryption at rest: the engine wrapper over the in-memory engine, the start-up
//! decisions, key rotation and sealed files.

use std::{path::Path, sync::Arc};

use super::{
    ConfiguredKeys, ENCRYPTION_TABLE, Keyring, MasterKey, engine::EncryptedEngine, files, rotation::RotationState,
    sealed_key_id, startup,
};
use crate::storage::{
    Batch, Db, Engine, ScanDirection, Table, WriteOp, memory::MemoryEngine, search_tables::directory_keys,
};

const NOTES: Table<(String, u64), String> = Table::new("notes");
const OTHER: Table<(String, u64), String> = Table::new("other");

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes(&[byte; 32])
}

fn keyring(active: u8, old: Option<u8>) -> Keyring {
    Keyring { active: key(active), old: old.map(key), index_key: [7; 32] }
}

fn raw_rows(inner: &MemoryEngine, table: &'static str) -> Vec<(Vec<u8>, Vec<u8>)> {
    inner.scan(table, &[], ScanDirection::Forward).unwrap().map(Result::unwrap).collect()
}

fn stored_of(inner: &MemoryEngine, has_data: bool) -> startup::Stored {
    startup::Stored::from_rows(has_data, raw_rows(inner, ENCRYPTION_TABLE)).unwrap()
}

#[test]
fn values_are_sealed_below_the_tables_and_read_back() {
    let inner = Arc::new(MemoryEngine::default());
    let engine = Arc::new(EncryptedEngine::with_keyring(inner.clone(), keyring(1, None)));
    let db = Db::with_engine(engine);
    let mut batch = Batch::new();
    for i in 0..5 {
        batch.put(&NOTES, &("room".to_owned(), i), &format!("secret body number {i}")).unwrap();
    }
    db.write(batch).unwrap();
    assert_eq!(NOTES.get(&db, &("room".to_owned(), 3)).unwrap().as_deref(), Some("secret body number 3"));
    let all = NOTES.scan_prefix(&db, &("room".to_owned(),)).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].1, "secret body number 4");
    // Below the wrapper: keys as they were (ordered), values sealed under key 1.
    let raw = raw_rows(&inner, NOTES.name);
    assert_eq!(raw.len(), 5);
    for (_, value) in &raw {
        assert!(!String::from_utf8_lossy(value).contains("secret"));
        assert_eq!(sealed_key_id(value), Some(key(1).id));
        assert_eq!(value.len(), super::VALUE_OVERHEAD + "\"secret body number 0\"".len());
    }
    // Deletes pass through.
    let mut batch = Batch::new();
    batch.delete(&NOTES, &("room".to_owned(), 0));
    db.write(batch).unwrap();
    assert!(NOTES.get(&db, &("room".to_owned(), 0)).unwrap().is_none());
}

#[test]
fn a_value_moved_to_another_row_or_table_fails_to_open() {
    let inner = Arc::new(MemoryEngine::default());
    let engine = Arc::new(EncryptedEngine::with_keyring(inner.clone(), keyring(1, None)));
    let db = Db::with_engine(engine.clone());
    let mut batch = Batch::new();
    batch.put(&NOTES, &("a".to_owned(), 1), &"for a".to_owned()).unwrap();
    db.write(batch).unwrap();
    let (_, sealed) = raw_rows(&inner, NOTES.name).remove(0);
    let moved = ("b".to_owned(), 1u64);
    inner
        .write(vec![
            WriteOp { table: NOTES.name, key: crate::storage::KeyCodec::encode(&moved), value: Some(sealed.clone()) },
            WriteOp {
                table: OTHER.name,
                key: crate::storage::KeyCodec::encode(&("a".to_owned(), 1u64)),
                value: Some(sealed),
            },
        ])
        .unwrap();
    assert!(NOTES.get(&db, &moved).is_err());
    assert!(OTHER.get(&db, &("a".to_owned(), 1)).is_err());
    // Under another key it does not open either.
    let stranger = Db::with_engine(Arc::new(EncryptedEngine::with_keyring(inner, keyring(2, None))));
    let error = NOTES.get(&stranger, &("a".to_owned(), 1)).unwrap_err();
    assert!(error.0.contains("not given"), "{error}");
}

#[test]
fn terms_are_keyed_hashes_and_the_directory_keeps_prefix_search() {
    let inner = Arc::new(MemoryEngine::default());
    let plain = Db::with_engine(inner.clone());
    assert_eq!(plain.term("hello"), "hello");
    let db = Db {
        engine: inner,
        encryption: Some(Arc::new(EncryptedEngine::with_keyring(plain.engine.clone(), keyring(1, None)))),
        generations: Default::default(),
        group_commit: None,
        threads: None,
    };
    let hashed = db.term("hello");
    assert_eq!(hashed.len(), 32);
    assert_ne!(hashed, "hello");
    assert_eq!(hashed, db.term("hello"));
    let keys = directory_keys(&db, &["ab".to_owned(), "abc".to_owned()]);
    assert_eq!(keys.len(), 3);
    assert!(keys.contains(&db.term("a")) && keys.contains(&db.term("abc")));
    assert!(keys.iter().all(|k| !k.contains("ab")));
    // The same index key gives the same hashes whatever the master key (rotation keeps them).
    let rotated = keyring(9, Some(1));
    assert_eq!(rotated.term("hello"), hashed);
}

#[test]
fn start_up_decides_from_the_stored_key_records() {
    let path = Path::new("/db");
    let inner = MemoryEngine::default();
    let keys = |current: u8, old: Option<u8>| Some(ConfiguredKeys { current: key(current), old: old.map(key) });
    // New database: key record and index key written.
    let plan = startup::plan(keys(1, None), &stored_of(&inner, false), path).unwrap().unwrap();
    assert_eq!(plan.writes.len(), 2);
    inner.write(plan.writes).unwrap();
    // Plaintext database with data: encrypted in place, marked as unfinished until done.
    let plan =
        startup::plan(keys(1, None), &startup::Stored { has_data: true, ..Default::default() }, path).unwrap().unwrap();
    assert!(plan.migrate && plan.writes.len() == 3);
    // Same key: opened, nothing written.
    let plan = startup::plan(keys(1, None), &stored_of(&inner, true), path).unwrap().unwrap();
    assert!(plan.writes.is_empty() && plan.rotation.is_none());
    // Wrong key, missing key.
    let error = startup::plan(keys(2, None), &stored_of(&inner, true), path).err().unwrap();
    assert!(error.0.contains("wrong encryption key") && error.0.contains("nothing was changed"), "{error}");
    let error = startup::plan(None, &stored_of(&inner, true), path).err().unwrap();
    assert!(error.0.contains("no encryption key was given"), "{error}");
    // Wrong old key for a rotation.
    assert!(startup::plan(keys(2, Some(3)), &stored_of(&inner, true), path).is_err());
    // Rotation 1 -> 2 starts.
    let plan = startup::plan(keys(2, Some(1)), &stored_of(&inner, true), path).unwrap().unwrap();
    assert_eq!(plan.rotation.as_ref().map(|r| r.from.clone()), Some(key(1).id.to_string()));
    inner.write(plan.writes).unwrap();
    // Until it finishes, the old key is required.
    let error = startup::plan(keys(2, None), &stored_of(&inner, true), path).err().unwrap();
    assert!(error.0.contains("not finished"), "{error}");
    let plan = startup::plan(keys(2, Some(1)), &stored_of(&inner, true), path).unwrap().unwrap();
    assert!(plan.rotation.is_some() && plan.writes.is_empty());
    assert_eq!(plan.keyring.index_key, stored_index(&inner, 2));
}

fn stored_index(inner: &MemoryEngine, active: u8) -> [u8; 32] {
    let record = inner.get(ENCRYPTION_TABLE, startup::INDEX_RECORD).unwrap().unwrap();
    super::open_with(&key(active), ENCRYPTION_TABLE, startup::INDEX_RECORD, &record).unwrap().try_into().unwrap()
}

#[test]
fn rotation_re_seals_every_value_and_resumes() {
    let path = Path::new("/db");
    let inner = Arc::new(MemoryEngine::default());
    let plan = startup::plan(Some(ConfiguredKeys { current: key(1), old: None }), &stored_of(&inner, false), path)
        .unwrap()
        .unwrap();
    let engine = Arc::new(EncryptedEngine::open(inner.clone(), plan).unwrap());
    let db = Db::with_engine(engine);
    let mut batch = Batch::new();
    for i in 0..1_234u64 {
        batch.put(&NOTES, &("room".to_owned(), i), &format!("body {i}")).unwrap();
        batch.put(&OTHER, &("x".to_owned(), i), &format!("other {i}")).unwrap();
    }
    db.write(batch).unwrap();
    // Restart with key 2 and old key 1: the rotation starts.
    let plan =
        startup::plan(Some(ConfiguredKeys { current: key(2), old: Some(key(1)) }), &stored_of(&inner, true), path)
            .unwrap()
            .unwrap();
    let engine = Arc::new(EncryptedEngine::open(inner.clone(), plan).unwrap());
    // A few batches, then a "restart": the cursor is in the database.
    let mut state: RotationState = engine.rotation().unwrap();
    state.table = Some(NOTES.name.to_owned());
    assert!(!engine.rotate_batch(NOTES.name, &mut state, 500).unwrap());
    let resumed = stored_of(&inner, true).rotation.unwrap();
    assert_eq!(resumed.values, 500);
    // Writes during the rotation are under the new key and readable.
    let db = Db::with_engine(engine.clone());
    let mut batch = Batch::new();
    batch.put(&NOTES, &("room".to_owned(), 1_000), &"rewritten".to_owned()).unwrap();
    db.write(batch).unwrap();
    let media = tempfile::tempdir().unwrap();
    super::rotation::run(&engine, &[NOTES.name, OTHER.name], media.path()).unwrap();
    assert!(engine.rotation().is_none());
    for table in [NOTES.name, OTHER.name] {
        assert!(raw_rows(&inner, table).iter().all(|(_, v)| sealed_key_id(v) == Some(key(2).id)));
    }
    // The old key is no longer needed; the new one alone opens everything.
    let stored = stored_of(&inner, true);
    assert!(stored.rotation.is_none() && stored.key_checks.len() == 1);
    let plan = startup::plan(Some(ConfiguredKeys { current: key(2), old: None }), &stored, path).unwrap().unwrap();
    let db = Db::with_engine(Arc::new(EncryptedEngine::open(inner, plan).unwrap()));
    assert_eq!(NOTES.get(&db, &("room".to_owned(), 1_000)).unwrap().as_deref(), Some("rewritten"));
    assert_eq!(OTHER.get(&db, &("x".to_owned(), 1_233)).unwrap().as_deref(), Some("other 1233"));
    assert_eq!(NOTES.all(&db).unwrap().len(), 1_234);
}

#[test]
fn sealed_files_round_trip_and_detect_tampering() {
    let keys = keyring(1, None);
    for size in [0, 1, 65_535, 65_536, 65_537, 200_000] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        files::seal(&keys, "name", &plaintext, &mut sealed).unwrap();
        assert_eq!(files::key_id(&sealed), Some(key(1).id));
        assert_eq!(files::open(&keys, "name", sealed.as_slice(), sealed.len()).unwrap(), plaintext, "size {size}");
        // Another name, a flipped bit, a cut: refused.
        assert!(files::open(&keys, "other", sealed.as_slice(), 0).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(files::open(&keys, "name", flipped.as_slice(), 0).is_err());
        if size >= 65_536 {
            let cut = &sealed[..files::HEADER_LEN + 65_536 + 16];
            assert!(files::open(&keys, "name", cut, 0).is_err(), "size {size}");
        }
        // Re-sealed under a new key, it opens with the new key alone.
        let rotating = keyring(2, Some(1));
        let mut resealed = Vec::new();
        files::reseal(&rotating, "name", sealed.as_slice(), &mut resealed).unwrap();
        assert_eq!(files::key_id(&resealed), Some(key(2).id));
        assert_eq!(files::open(&keyring(2, None), "name", resealed.as_slice(), 0).unwrap(), plaintext);
    }
}

#[test]
fn keys_parse_from_hex_and_base64_only() {
    let hex_key = "00".repeat(32);
    assert_eq!(MasterKey::parse(&format!("{hex_key}\n"), "test").unwrap().id, key(0).id);
    let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(MasterKey::parse(b64, "test").unwrap().id, key(0).id);
    for bad in ["", "short", &"ab".repeat(31)] {
        let error = MasterKey::parse(bad, "the test").unwrap_err();
        assert!(error.0.contains("the test"), "{error}");
        assert!(bad.is_empty() || !error.0.contains(bad), "the key is not echoed: {error}");
    }
    assert!(!format!("{:?}", key(5)).contains("0505"));
}
