//! The database schema, versioned with SQLite's `user_version`: `MIGRATIONS[n]` takes
//! version n to n+1. Only ever append: a collector opening an older file runs the rest.

pub(super) const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        clips TEXT NOT NULL DEFAULT '[]',
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE announcements (
        id TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        args TEXT NOT NULL,
        stopped_ms INTEGER
    );
    CREATE TABLE targets (
        announcement TEXT NOT NULL REFERENCES announcements(id),
        agent TEXT NOT NULL,
        command_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        sends INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (announcement, agent)
    );
    CREATE INDEX announcements_created ON announcements(created_ms);
    CREATE TABLE audit (
        at_ms INTEGER NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL
    );
",
    r"
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE agent_schedules (
        agent TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        args TEXT NOT NULL,
        published INTEGER NOT NULL DEFAULT 0,
        applied_version INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    );
",
    r"
    ALTER TABLE announcements ADD COLUMN schedule TEXT;
    CREATE INDEX announcements_schedule ON announcements(schedule);
    CREATE TABLE stops (
        stop_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        announcement TEXT NOT NULL,
        target TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_limits (
        rule TEXT NOT NULL,
        alert TEXT NOT NULL,
        status TEXT NOT NULL,
        last_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, alert, status)
    );
    CREATE INDEX alert_limits_last ON alert_limits(last_ms);
",
];
