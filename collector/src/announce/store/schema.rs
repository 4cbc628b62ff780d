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
    // A sound agent's site is pinned: a status naming another site is kept as a claim for an
    // admin to confirm. Retention goes by when the collector received a row (`received_ms`),
    // never by a time an agent claims; rows from before this version take the earliest time
    // the collector touched them, at most now. `schedule_versions` keeps the versions sent to
    // each agent, so an event of a play is checked against what that agent really applied.
    r"
    ALTER TABLE agents ADD COLUMN claimed_site TEXT;
    ALTER TABLE agents ADD COLUMN claimed_clips TEXT;
    ALTER TABLE agents ADD COLUMN claimed_ms INTEGER;
    ALTER TABLE announcements ADD COLUMN received_ms INTEGER;
    UPDATE announcements SET received_ms = CASE
        WHEN created_by = 'schedule' THEN COALESCE(
            (SELECT MIN(t.updated_ms) FROM targets t WHERE t.announcement = announcements.id),
            created_ms)
        ELSE created_ms END;
    UPDATE announcements SET received_ms =
        MIN(received_ms, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
    CREATE INDEX announcements_received ON announcements(received_ms);
    CREATE TABLE schedule_versions (
        agent TEXT NOT NULL,
        version INTEGER NOT NULL,
        entries TEXT NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0,
        applied INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (agent, version)
    );
    INSERT INTO schedule_versions (agent, version, entries, sent, applied)
        SELECT agent, version, args, published, COALESCE(applied_version = version, 0)
        FROM agent_schedules;
",
];
