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

#[test]
fn retention_goes_by_when_a_play_was_received_not_by_its_claimed_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let args = serde_json::Value::Null;
    // Claimed in the year 9999 and in 1970, both received at 1,000.
    for play in ["pagi@253402300740", "pagi@60"] {
        let event = scheduled::PlayEvent {
            agent: "aula",
            schedule: "pagi",
            play,
            outcome: "finished",
            detail: "",
        };
        store.record_scheduled(&event, &args, 1000).unwrap();
    }
    assert_eq!(store.prune(999).unwrap(), 0, "nothing received before 999");
    assert_eq!(store.prune(1001).unwrap(), 2, "both received at 1,000");
    assert_eq!(store.plays_since("aula", "pagi", 0).unwrap(), 0);
}

#[test]
fn a_database_of_the_previous_schema_gets_receive_times_and_its_schedule_versions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO agents (id, site, updated_ms) VALUES ('aula', 'office', 1);
             INSERT INTO announcements (id, created_ms, created_by, expires_ms, args)
                 VALUES ('a1', 500, 'token:ops', 600, '{}');
             INSERT INTO announcements (id, created_ms, created_by, expires_ms, args, schedule)
                 VALUES ('pagi@253402300740', 253402300740000, 'schedule', 253402301040000, 'null', 'pagi');
             INSERT INTO targets (announcement, agent, command_id, status, updated_ms)
                 VALUES ('pagi@253402300740', 'aula', 'aula/pagi@253402300740', 'finished', 700);
             INSERT INTO agent_schedules (agent, version, args, published, applied_version)
                 VALUES ('aula', 7, '[]', 1, 7);",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    // The forged play was first touched at 700: retention can reach it now.
    assert_eq!(store.prune(701).unwrap(), 2);
    assert_eq!(store.agent("aula").unwrap().unwrap().0, "office");
    assert_eq!(store.pinned_sites().unwrap()[0].claimed_site, None);
    let applied: (u64, bool, bool) = store
        .conn()
        .query_row(
            "SELECT version, sent, applied FROM schedule_versions WHERE agent = 'aula'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(applied, (7, true, true));
}

#[test]
fn kept_schedule_versions_are_bounded_and_keep_the_applied_one() {
    use crate::announce::schedules::{self, KEPT_VERSIONS, ScheduleSpec};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spec = |minute: usize| -> ScheduleSpec {
        serde_json::from_value(serde_json::json!({
            "name": "pagi", "targets": ["aula"], "times": [format!("08:{minute:02}")],
            "announce": {"text": "Selamat pagi"}
        }))
        .unwrap()
    };
    let versions = || -> Vec<u64> {
        let mut statement = store
            .conn()
            .prepare("SELECT version FROM schedule_versions ORDER BY version")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    schedules::recompute(&store, &[spec(0)], &[], 0).unwrap();
    let first = versions()[0];
    schedules::mark_published(&store, "aula", first).unwrap();
    schedules::record_answer(&store, "aula", Some(first), None).unwrap();
    // An agent naming a version it was never sent marks nothing.
    schedules::record_answer(&store, "aula", Some(first + 1000), None).unwrap();
    for minute in 1..30 {
        schedules::recompute(&store, &[spec(minute)], &[], 0).unwrap();
    }
    let kept = versions();
    assert_eq!(kept.len(), KEPT_VERSIONS + 1, "{kept:?}");
    assert_eq!(kept[0], first, "the applied version stays");
    let entries = schedules::kept_entries(&store, "aula", "pagi").unwrap();
    assert_eq!(entries.iter().filter(|e| e.applied).count(), 1);
    assert_eq!(entries.iter().filter(|e| e.sent).count(), 1);
    assert!(
        schedules::kept_entries(&store, "lobi", "pagi")
            .unwrap()
            .is_empty()
    );
}
