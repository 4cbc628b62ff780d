//! The schedule's arithmetic: when each entry is next due, as a pure function of the schedule
//! and an instant, so it is tested on fixed instants and the agent plays on time by itself
//! (no broker or collector needed once a schedule is stored). The collector parses schedules
//! with the same code before it sends them, so what it accepts the agent accepts too.
//!
//! Entries are either times of day on weekdays, or five-field cron expressions (minute, hour,
//! day of month, month, day of week; `*`, lists, ranges, steps; day 0 and 7 are Sunday; when
//! both day fields are restricted either may match, as in Vixie cron). Times are local to the
//! schedule's time zone (default Asia/Jakarta, WIB, which has no daylight saving), and an
//! entry plays only between its validity dates.

use crate::sound::{AnnounceArgs, ScheduleArgs};
use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

/// How far ahead the next due time is searched; an entry due later than this counts as never.
const HORIZON_DAYS: i32 = 400;

/// A schedule ready to compute with.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub version: u64,
    pub time_zone: TimeZone,
    pub entries: Vec<Entry>,
}

/// One entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// The entry's own zone, or the schedule's.
    pub time_zone: TimeZone,
    when: When,
    valid_from: Option<Date>,
    valid_until: Option<Date>,
    pub announce: AnnounceArgs,
}

#[derive(Debug, Clone)]
enum When {
    /// Sorted times; `days` bit n (0 = Sunday) set for the weekdays it plays on.
    Times {
        times: Vec<Time>,
        days: u8,
    },
    Cron(Cron),
}

/// A parsed cron expression, one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Whether the day-of-month / day-of-week field was `*` (matters for the "either" rule).
    any_day_of_month: bool,
    any_day_of_week: bool,
}

/// Quiet hours: a local time range, which may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: Time,
    pub end: Time,
}

impl QuietHours {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not HH:MM-HH:MM"))?;
        let quiet = Self {
            start: parse_time(start.trim())?,
            end: parse_time(end.trim())?,
        };
        if quiet.start == quiet.end {
            return Err(format!("{text:?} starts and ends at the same time"));
        }
        Ok(quiet)
    }

    /// Whether `at` (local) falls in the quiet hours.
    pub fn contains(&self, at: Time) -> bool {
        if self.start < self.end {
            self.start <= at && at < self.end
        } else {
            at >= self.start || at < self.end
        }
    }
}

impl Schedule {
    /// Checks and prepares `args`; the error names the entry and the field.
    pub fn parse(args: &ScheduleArgs) -> Result<Self, String> {
        args.validate()?;
        let time_zone = parse_time_zone(&args.time_zone)?;
        let mut entries = Vec::with_capacity(args.entries.len());
        for (index, entry) in args.entries.iter().enumerate() {
            let at = |why: String| format!("entries[{index}] ({}): {why}", entry.name);
            let entry_zone = match &entry.time_zone {
                Some(name) => parse_time_zone(name).map_err(at)?,
                None => time_zone.clone(),
            };
            let when = match &entry.cron {
                Some(cron) => When::Cron(Cron::parse(cron).map_err(at)?),
                None => {
                    let mut times = entry
                        .times
                        .iter()
                        .map(|time| parse_time(time))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(at)?;
                    times.sort();
                    times.dedup();
                    let days = parse_weekdays(&entry.weekdays).map_err(at)?;
                    When::Times { times, days }
                }
            };
            let date = |text: &Option<String>| -> Result<Option<Date>, String> {
                text.as_deref()
                    .map(|text| {
                        text.parse::<Date>()
                            .map_err(|_| format!("{text:?} is not a date YYYY-MM-DD"))
                    })
                    .transpose()
            };
            let valid_from = date(&entry.valid_from).map_err(at)?;
            let valid_until = date(&entry.valid_until).map_err(at)?;
            if let (Some(from), Some(until)) = (valid_from, valid_until)
                && from > until
            {
                return Err(at("valid_from is after valid_until".to_owned()));
            }
            entries.push(Entry {
                name: entry.name.clone(),
                time_zone: entry_zone,
                when,
                valid_from,
                valid_until,
                announce: entry.announce.clone(),
            });
        }
        Ok(Self {
            version: args.version,
            time_zone,
            entries,
        })
    }

    /// The next moment strictly after `after` at which an entry is due, with the entry; the
    /// earliest-listed entry wins a tie.
    pub fn next_due(&self, after: Timestamp) -> Option<(Timestamp, &Entry)> {
        self.entries
            .iter()
            .filter_map(|entry| Some((entry.next_due(after)?, entry)))
            .min_by_key(|(at, _)| *at)
    }
}

impl Entry {
    /// The next moment strictly after `after` at which this entry is due, in its own zone.
    pub fn next_due(&self, after: Timestamp) -> Option<Timestamp> {
        let time_zone = &self.time_zone;
        let local = time_zone.to_datetime(after);
        let mut date = local.date();
        for day in 0..HORIZON_DAYS {
            if self.valid_until.is_some_and(|until| date > until) {
                return None;
            }
            let valid = self.valid_from.is_none_or(|from| date >= from);
            if valid {
                // On the first day only times after `after` count.
                let not_before = (day == 0).then(|| local.time());
                for time in self.times_on(date, not_before) {
                    let at = time_zone
                        .to_ambiguous_timestamp(date.to_datetime(time))
                        .compatible()
                        .ok()?;
                    if at > after {
                        return Some(at);
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The entry's times on `date` at or after `not_before`, in order.
    fn times_on(&self, date: Date, not_before: Option<Time>) -> Vec<Time> {
        let floor = not_before.unwrap_or(Time::midnight());
        match &self.when {
            When::Times { times, days } => {
                if days & weekday_bit(date.weekday()) == 0 {
                    return Vec::new();
                }
                times.iter().copied().filter(|t| *t >= floor).collect()
            }
            When::Cron(cron) => {
                if !cron.matches_day(date) {
                    return Vec::new();
                }
                let mut times = Vec::new();
                for hour in 0..24i8 {
                    if cron.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if cron.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let time = Time::constant(hour, minute, 0, 0);
                        if time >= floor {
                            times.push(time);
                        }
                    }
                }
                times
            }
        }
    }
}

impl Cron {
    fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!(
                "cron {text:?} must have 5 fields: minute hour day-of-month month day-of-week"
            ));
        };
        let field = |name: &str, value: &str, min: u32, max: u32| {
            parse_field(value, min, max).map_err(|why| format!("cron {name} {value:?}: {why}"))
        };
        let mut days_of_week = field("day-of-week", weekday, 0, 7)? as u8;
        if days_of_week & (1 << 7) != 0 {
            // 7 is Sunday too.
            days_of_week = (days_of_week | 1) & 0x7f;
        }
        Ok(Self {
            minutes: field("minute", minute, 0, 59)?,
            hours: field("hour", hour, 0, 23)? as u32,
            days_of_month: field("day-of-month", day, 1, 31)? as u32,
            months: field("month", month, 1, 12)? as u16,
            days_of_week,
            any_day_of_month: *day == "*",
            any_day_of_week: *weekday == "*",
        })
    }

    fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let by_month_day = self.days_of_month & (1 << date.day()) != 0;
        let by_weekday = self.days_of_week & weekday_bit(date.weekday()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => by_month_day,
            (true, false) => by_weekday,
            (false, false) => by_month_day || by_weekday,
        }
    }
}

/// One cron field as a bit set over `min..=max`.
fn parse_field(text: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or("the step must be a positive number")?;
                (range, step)
            }
            None => (part, 1),
        };
        let number = |text: &str| -> Result<u32, String> {
            text.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{text:?} is not a number from {min} to {max}"))
        };
        let (start, end) = match range {
            "*" => (min, max),
            range => match range.split_once('-') {
                Some((start, end)) => (number(start)?, number(end)?),
                None if step > 1 => (number(range)?, max),
                None => {
                    let n = number(range)?;
                    (n, n)
                }
            },
        };
        if start > end {
            return Err(format!("range {start}-{end} runs backwards"));
        }
        let mut value = start;
        while value <= end {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok(bits)
}

/// An IANA time zone name, from the bundled database (so a host without tzdata knows it).
pub fn parse_time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("time_zone {name:?} is not an IANA time zone"))
}

/// `HH:MM`, or `HH:MM:SS` for an entry that must start on a given second.
fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time HH:MM or HH:MM:SS");
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|part| part.len() != 2) {
        return Err(bad());
    }
    let number = |text: &str, max: i8| -> Result<i8, String> {
        text.parse::<i8>()
            .ok()
            .filter(|n| (0..max).contains(n))
            .ok_or_else(bad)
    };
    let second = match parts.get(2) {
        Some(second) => number(second, 60)?,
        None => 0,
    };
    Ok(Time::constant(
        number(parts[0], 24)?,
        number(parts[1], 60)?,
        second,
        0,
    ))
}

fn parse_weekdays(names: &[String]) -> Result<u8, String> {
    if names.is_empty() {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for name in names {
        let day = match name.to_ascii_lowercase().as_str() {
            "sun" => Weekday::Sunday,
            "mon" => Weekday::Monday,
            "tue" => Weekday::Tuesday,
            "wed" => Weekday::Wednesday,
            "thu" => Weekday::Thursday,
            "fri" => Weekday::Friday,
            "sat" => Weekday::Saturday,
            _ => return Err(format!("weekday {name:?} is not one of mon, tue, ..., sun")),
        };
        days |= weekday_bit(day);
    }
    Ok(days)
}

fn weekday_bit(day: Weekday) -> u8 {
    1 << day.to_sunday_zero_offset()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(value: serde_json::Value) -> Schedule {
        Schedule::parse(&serde_json::from_value(value).unwrap()).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &Schedule, after: &str) -> Option<(String, String)> {
        schedule
            .next_due(at(after))
            .map(|(when, entry)| (when.to_string(), entry.name.clone()))
    }

    fn entry(name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut entry =
            serde_json::json!({"name": name, "announce": {"text": "Mohon memakai masker"}});
        for (key, value) in extra.as_object().unwrap() {
            entry[key] = value.clone();
        }
        entry
    }

    #[test]
    fn times_are_local_to_jakarta() {
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("pagi", serde_json::json!({"times": ["08:00", "13:30"]}))]}));
        // 00:30 UTC is 07:30 WIB: the 08:00 WIB entry is 01:00 UTC.
        assert_eq!(
            next(&s, "2026-11-30T00:30:00Z"),
            Some(("2026-11-30T01:00:00Z".to_owned(), "pagi".to_owned()))
        );
        // Exactly at a due time: strictly after, so the next one.
        assert_eq!(
            next(&s, "2026-11-30T01:00:00Z").unwrap().0,
            "2026-11-30T06:30:00Z"
        );
    }

    #[test]
    fn the_day_boundary_is_jakartas_not_utcs() {
        // 23:30 WIB on Sunday 29 Nov is 16:30 UTC; an entry at 00:15 on Mondays is due 45
        // minutes later, on Monday in Jakarta but still Sunday in UTC.
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("senin", serde_json::json!({"times": ["00:15"], "weekdays": ["mon"]}))]}));
        assert_eq!(
            next(&s, "2026-11-29T16:30:00Z").unwrap().0,
            "2026-11-29T17:15:00Z"
        );
    }

    #[test]
    fn weekdays_and_other_time_zones() {
        let s = schedule(
            serde_json::json!({"version": 1, "time_zone": "Asia/Makassar",
            "entries": [entry("jumat", serde_json::json!({"times": ["11:00"], "weekdays": ["fri"]}))]}),
        );
        // Saturday 28 Nov 2026 -> Friday 4 Dec, 11:00 WITA (UTC+8) = 03:00 UTC.
        assert_eq!(
            next(&s, "2026-11-28T00:00:00Z").unwrap().0,
            "2026-12-04T03:00:00Z"
        );
    }

    #[test]
    fn validity_dates_bound_an_entry() {
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("vaksinasi", serde_json::json!({"times": ["09:00"],
                "valid_from": "2026-12-01", "valid_until": "2026-12-02"}))]}));
        assert_eq!(
            next(&s, "2026-11-28T00:00:00Z").unwrap().0,
            "2026-12-01T02:00:00Z"
        );
        assert_eq!(
            next(&s, "2026-12-01T02:00:00Z").unwrap().0,
            "2026-12-02T02:00:00Z"
        );
        assert_eq!(
            next(&s, "2026-12-02T02:00:00Z"),
            None,
            "the campaign is over"
        );
    }

    #[test]
    fn cron_expressions() {
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("masker", serde_json::json!({"cron": "*/30 8-16 * * 1-5"}))]}));
        // Friday 27 Nov 16:40 WIB (09:40 UTC): next is Monday 30 Nov 08:00 WIB.
        assert_eq!(
            next(&s, "2026-11-27T09:40:00Z").unwrap().0,
            "2026-11-30T01:00:00Z"
        );
        assert_eq!(
            next(&s, "2026-11-30T01:00:00Z").unwrap().0,
            "2026-11-30T01:30:00Z"
        );
        // Either day field matches when both are restricted; 7 is Sunday.
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("x", serde_json::json!({"cron": "0 12 1 * 7"}))]}));
        // From Wednesday 25 Nov: Sunday 29 Nov comes before 1 Dec.
        assert_eq!(
            next(&s, "2026-11-25T00:00:00Z").unwrap().0,
            "2026-11-29T05:00:00Z"
        );
        assert_eq!(
            next(&s, "2026-11-29T05:00:00Z").unwrap().0,
            "2026-12-01T05:00:00Z"
        );
    }

    #[test]
    fn the_earliest_entry_wins_and_a_replaced_schedule_is_computed_afresh() {
        let first = schedule(serde_json::json!({"version": 1, "entries": [
            entry("a", serde_json::json!({"times": ["10:00"]})),
            entry("b", serde_json::json!({"times": ["09:00"]}))]}));
        assert_eq!(next(&first, "2026-11-30T00:00:00Z").unwrap().1, "b");
        // Version 2 replaces "b" while it is due in a minute: only the new entries count.
        let second = schedule(serde_json::json!({"version": 2, "entries": [
            entry("c", serde_json::json!({"times": ["09:30"]}))]}));
        assert_eq!(
            next(&second, "2026-11-30T01:59:00Z"),
            Some(("2026-11-30T02:30:00Z".to_owned(), "c".to_owned()))
        );
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let quiet = QuietHours::parse("21:00-06:00").unwrap();
        assert!(quiet.contains(Time::constant(23, 0, 0, 0)));
        assert!(quiet.contains(Time::constant(5, 59, 0, 0)));
        assert!(!quiet.contains(Time::constant(6, 0, 0, 0)));
        assert!(!quiet.contains(Time::constant(12, 0, 0, 0)));
        let lunch = QuietHours::parse("12:00-13:00").unwrap();
        assert!(lunch.contains(Time::constant(12, 30, 0, 0)));
        assert!(!lunch.contains(Time::constant(13, 0, 0, 0)));
        assert!(QuietHours::parse("25:00-06:00").is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        let parse = |value: serde_json::Value| {
            Schedule::parse(&serde_json::from_value(value).unwrap()).unwrap_err()
        };
        let error = parse(serde_json::json!({"version": 1, "entries": [
            entry("x", serde_json::json!({"cron": "61 * * * *"}))]}));
        assert!(error.starts_with("entries[0] (x): cron minute"), "{error}");
        let error = parse(serde_json::json!({"version": 1, "entries": [
            entry("y", serde_json::json!({"times": ["8:00"]}))]}));
        assert!(error.contains("is not a time HH:MM"), "{error}");
        assert!(parse_time("08:00:30").is_ok() && parse_time("08:00:60").is_err());
        let error = parse(serde_json::json!({"version": 1, "entries": [
            entry("z", serde_json::json!({"times": ["08:00"], "weekdays": ["senin"]}))]}));
        assert!(error.contains("weekday \"senin\""), "{error}");
        let error = parse(
            serde_json::json!({"version": 1, "time_zone": "Mars/Olympus",
            "entries": []}),
        );
        assert!(error.contains("Mars/Olympus"), "{error}");
        let error = parse(serde_json::json!({"version": 1, "entries": [
            entry("w", serde_json::json!({"times": ["08:00"], "time_zone": "Asia/Bandung"}))]}));
        assert_eq!(
            error,
            "entries[0] (w): time_zone \"Asia/Bandung\" is not an IANA time zone"
        );
    }

    #[test]
    fn an_entry_may_have_its_own_time_zone() {
        // Jakarta (UTC+7) by default, one entry in Jayapura (WIT, UTC+9): both at 08:00 local.
        let s = schedule(serde_json::json!({"version": 1, "entries": [
            entry("jakarta", serde_json::json!({"times": ["08:00"]})),
            entry("jayapura", serde_json::json!({"times": ["08:00"], "time_zone": "Asia/Jayapura"}))]}));
        assert_eq!(
            next(&s, "2026-11-30T00:00:00Z"),
            Some(("2026-11-30T01:00:00Z".to_owned(), "jakarta".to_owned()))
        );
        assert_eq!(
            next(&s, "2026-11-29T22:00:00Z"),
            Some(("2026-11-29T23:00:00Z".to_owned(), "jayapura".to_owned()))
        );
    }
}
