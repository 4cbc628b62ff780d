//! The store on real SQLite files in temp dirs.

use super::*;

#[test]
fn migrates_and_keeps_history_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .upsert_agent("aula", "dc", Some(&["bel.wav".to_owned()]), 1)
            .unwrap();
        let row = AnnouncementRow {
            id: "a1".to_owned(),
            created_ms: 10,
            created_by: "token:ops".to_owned(),
            expires_ms: 100,
            args: serde_json::json!({"text": "halo"}),
            stopped_ms: None,
            schedule: None,
            targets: Vec::new(),
        };
        store
            .insert_announcement(&row, &[("aula".to_owned(), "a1.aula".to_owned())])
            .unwrap();
        assert!(store.set_status("a1.aula", "queued", "", 11).unwrap());
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.agent("aula").unwrap(),
        Some(("dc".to_owned(), vec!["bel.wav".to_owned()]))
    );
    // A status without clips keeps the clips known.
    store.upsert_agent("aula", "gor", None, 2).unwrap();
    assert_eq!(store.agent("aula").unwrap().unwrap().1, vec!["bel.wav"]);
    let row = store.announcement("a1").unwrap().unwrap();
    assert_eq!(row.targets[0].status, "queued");
    assert_eq!(
        store
            .history(
                0,
                20,
                &HistoryFilter {
                    agent: Some("aula"),
                    outcome: Some("queued"),
                    schedule: None,
                },
                10,
            )
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .history(
                0,
                20,
                &HistoryFilter {
                    agent: Some("lobby"),
                    ..HistoryFilter::default()
                },
                10,
            )
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .history(11, 20, &HistoryFilter::default(), 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn prune_drops_old_history_and_backup_copies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (id, created_ms) in [("old", 10), ("new", 1000)] {
        let row = AnnouncementRow {
            id: id.to_owned(),
            created_ms,
            created_by: "t".to_owned(),
            expires_ms: created_ms + 100,
            args: serde_json::json!({}),
            stopped_ms: None,
            schedule: None,
            targets: Vec::new(),
        };
        let target = [("aula".to_owned(), format!("{id}-0"))];
        store.insert_announcement(&row, &target).unwrap();
        store.audit(created_ms, "t", "announce", id, "").unwrap();
    }
    assert_eq!(store.prune(500).unwrap(), 1);
    assert!(store.announcement("old").unwrap().is_none());
    assert_eq!(store.audit_log(10).unwrap().len(), 1);
    let copy = tempfile::tempdir().unwrap();
    store.backup(&copy.path().join(FILE_NAME)).unwrap();
    let copied = Store::open(copy.path()).unwrap();
    assert_eq!(
        copied.announcement("new").unwrap().unwrap().targets.len(),
        1
    );
    assert!(
        store.backup(&copy.path().join(FILE_NAME)).is_err(),
        "VACUUM INTO never overwrites"
    );
}

#[test]
fn a_corrupt_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 4096]).unwrap();
    let error = Store::open(dir.path()).err().unwrap().to_string();
    assert!(error.starts_with("storage.dir: '"), "{error}");
    assert!(
        error.contains("cannot be opened as a Pantau database"),
        "{error}"
    );
}

#[test]
fn a_file_in_place_of_the_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let error = Store::open(&file).err().unwrap().to_string();
    assert!(error.contains("cannot be created"), "{error}");
}
