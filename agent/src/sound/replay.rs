//! The replay memory: ids of the signed commands carried out, each kept until its command
//! expires, so a recorded command published again is refused. It has two rooms: `stop` and
//! emergency announcements have their own, so no number of ordinary announcements can crowd
//! them out. A full room forgets the entry that expires soonest; forgetting must not reopen a
//! replay, so each room keeps a floor, the latest expiry it forgot, and refuses a command that
//! expires at or before it (such a command could be one it forgot). The floor only rises, and
//! since entries are forgotten soonest first, every entry still kept expires after it.
//!
//! Pure: the caller passes the time and persists [`Stored`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Which room a command's id is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Announcements below emergency.
    Ordinary,
    /// `stop`, and announcements of priority emergency.
    Priority,
}

impl Room {
    pub const ALL: [Room; 2] = [Room::Ordinary, Room::Priority];

    pub fn as_str(self) -> &'static str {
        match self {
            Room::Ordinary => "ordinary",
            Room::Priority => "priority",
        }
    }
}

/// Why a command may not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The id was carried out already and has not expired.
    Seen,
    /// It expires at or before the room's floor: it could be a command the room forgot.
    BelowFloor { floor_ms: i64 },
}

/// One room: ids with their expiry (Unix ms), a capacity, and the floor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomState {
    pub ids: HashMap<String, i64>,
    /// The latest expiry forgotten to make room (0: none yet).
    #[serde(default)]
    pub floor_ms: i64,
}

/// What is written to disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub ordinary: RoomState,
    pub priority: RoomState,
}

/// The file as read: the current shape, or a plain map of id to expiry (one room, no floor),
/// as agents wrote it before there were rooms, taken as the ordinary room.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OnDisk {
    Rooms(Stored),
    Flat(HashMap<String, i64>),
}

impl From<OnDisk> for Stored {
    fn from(disk: OnDisk) -> Self {
        match disk {
            OnDisk::Rooms(stored) => stored,
            OnDisk::Flat(ids) => Stored {
                ordinary: RoomState { ids, floor_ms: 0 },
                priority: RoomState::default(),
            },
        }
    }
}

/// The two rooms and their capacities.
#[derive(Debug, Clone)]
pub struct ReplayMemory {
    stored: Stored,
    capacity: [usize; 2],
    /// Entries forgotten to make room, per room, since start.
    forgotten: [u64; 2],
}

impl ReplayMemory {
    /// Starts from `stored`, forgetting what expired before `now_ms` and what does not fit
    /// (the capacities may have shrunk since it was written).
    pub fn new(stored: Stored, ordinary: usize, priority: usize, now_ms: i64) -> Self {
        let mut memory = Self {
            stored,
            capacity: [ordinary.max(1), priority.max(1)],
            forgotten: [0; 2],
        };
        for room in Room::ALL {
            memory.prune(room, now_ms);
            while memory.state(room).ids.len() > memory.capacity(room) {
                memory.forget_soonest(room);
            }
        }
        memory
    }

    /// Whether a command `id` expiring at `expires_ms` may be carried out; remembers nothing.
    pub fn check(&self, room: Room, id: &str, expires_ms: i64) -> Result<(), Refusal> {
        if Room::ALL
            .iter()
            .any(|room| self.state(*room).ids.contains_key(id))
        {
            return Err(Refusal::Seen);
        }
        let floor_ms = self.state(room).floor_ms;
        if expires_ms <= floor_ms {
            return Err(Refusal::BelowFloor { floor_ms });
        }
        Ok(())
    }

    /// Remembers `id` until `expires_ms`; a full room forgets its soonest-expiring entry
    /// first, raising its floor. Call once the command is accepted.
    pub fn remember(&mut self, room: Room, id: &str, expires_ms: i64, now_ms: i64) {
        self.prune(room, now_ms);
        while self.state(room).ids.len() >= self.capacity(room) {
            self.forget_soonest(room);
        }
        self.state_mut(room).ids.insert(id.to_owned(), expires_ms);
    }

    /// Ids kept in `room` that have not expired at `now_ms`.
    pub fn len(&self, room: Room, now_ms: i64) -> usize {
        self.state(room)
            .ids
            .values()
            .filter(|expires| **expires >= now_ms)
            .count()
    }

    pub fn capacity(&self, room: Room) -> usize {
        self.capacity[room as usize]
    }

    pub fn floor_ms(&self, room: Room) -> i64 {
        self.state(room).floor_ms
    }

    /// Entries forgotten to make room since start.
    pub fn forgotten(&self, room: Room) -> u64 {
        self.forgotten[room as usize]
    }

    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    fn prune(&mut self, room: Room, now_ms: i64) {
        self.state_mut(room)
            .ids
            .retain(|_, expires| *expires >= now_ms);
    }

    fn forget_soonest(&mut self, room: Room) {
        let state = self.state_mut(room);
        // The soonest expiry, ties broken by id so the choice does not depend on hashing.
        let Some((id, expires_ms)) = state
            .ids
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(id, expires)| (id.clone(), *expires))
        else {
            return;
        };
        state.ids.remove(&id);
        state.floor_ms = state.floor_ms.max(expires_ms);
        self.forgotten[room as usize] += 1;
    }

    fn state(&self, room: Room) -> &RoomState {
        match room {
            Room::Ordinary => &self.stored.ordinary,
            Room::Priority => &self.stored.priority,
        }
    }

    fn state_mut(&mut self, room: Room) -> &mut RoomState {
        match room {
            Room::Ordinary => &mut self.stored.ordinary,
            Room::Priority => &mut self.stored.priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn fill(memory: &mut ReplayMemory, room: Room, count: usize, expires_ms: i64) {
        for n in 0..count {
            let id = format!("{}-{n}", room.as_str());
            memory.check(room, &id, expires_ms).unwrap();
            memory.remember(room, &id, expires_ms, NOW);
        }
    }

    #[test]
    fn a_full_ordinary_room_does_not_touch_the_priority_room() {
        let mut memory = ReplayMemory::new(Stored::default(), 100, 10, NOW);
        fill(&mut memory, Room::Ordinary, 100, NOW + 24 * HOUR);
        assert_eq!(memory.len(Room::Ordinary, NOW), 100);
        assert_eq!(memory.floor_ms(Room::Ordinary), 0, "nothing forgotten yet");
        // A stop expiring in a minute is taken: its room is empty.
        memory
            .check(Room::Priority, "stop-1", NOW + 60_000)
            .unwrap();
        memory.remember(Room::Priority, "stop-1", NOW + 60_000, NOW);
        assert_eq!(memory.len(Room::Priority, NOW), 1);
        assert_eq!(
            memory.check(Room::Priority, "stop-1", NOW + 60_000),
            Err(Refusal::Seen)
        );
    }

    #[test]
    fn a_full_room_forgets_the_soonest_expiry_and_raises_its_floor() {
        let mut memory = ReplayMemory::new(Stored::default(), 3, 1, NOW);
        memory.remember(Room::Ordinary, "a", NOW + 3 * HOUR, NOW);
        memory.remember(Room::Ordinary, "b", NOW + HOUR, NOW);
        memory.remember(Room::Ordinary, "c", NOW + 2 * HOUR, NOW);
        // Full: "d" makes "b" (soonest) go, and the floor becomes b's expiry.
        memory.check(Room::Ordinary, "d", NOW + 5 * HOUR).unwrap();
        memory.remember(Room::Ordinary, "d", NOW + 5 * HOUR, NOW);
        assert_eq!(memory.forgotten(Room::Ordinary), 1);
        assert_eq!(memory.floor_ms(Room::Ordinary), NOW + HOUR);
        assert_eq!(memory.len(Room::Ordinary, NOW), 3);
        // "b" replayed: not remembered any more, but refused by the floor.
        assert_eq!(
            memory.check(Room::Ordinary, "b", NOW + HOUR),
            Err(Refusal::BelowFloor {
                floor_ms: NOW + HOUR
            })
        );
        // So is any new command expiring at or before it; one after it is taken.
        assert!(memory.check(Room::Ordinary, "e", NOW + HOUR - 1).is_err());
        assert_eq!(memory.check(Room::Ordinary, "e", NOW + HOUR + 1), Ok(()));
        // The others are still remembered.
        for id in ["a", "c", "d"] {
            assert_eq!(
                memory.check(Room::Ordinary, id, NOW + 9 * HOUR),
                Err(Refusal::Seen)
            );
        }
        // The priority room's floor is its own.
        assert_eq!(memory.check(Room::Priority, "s", NOW + 60_000), Ok(()));
    }

    #[test]
    fn a_new_entry_expiring_soonest_is_kept_and_the_floor_never_falls() {
        let mut memory = ReplayMemory::new(Stored::default(), 2, 1, NOW);
        memory.remember(Room::Ordinary, "a", NOW + 4 * HOUR, NOW);
        memory.remember(Room::Ordinary, "b", NOW + 5 * HOUR, NOW);
        memory.remember(Room::Ordinary, "c", NOW + HOUR, NOW);
        // "a" went (the soonest of those kept); "c" itself stays remembered.
        assert_eq!(memory.floor_ms(Room::Ordinary), NOW + 4 * HOUR);
        assert_eq!(
            memory.check(Room::Ordinary, "c", NOW + HOUR),
            Err(Refusal::Seen)
        );
        memory.remember(Room::Ordinary, "d", NOW + 6 * HOUR, NOW);
        assert_eq!(memory.floor_ms(Room::Ordinary), NOW + 4 * HOUR, "c went");
    }

    #[test]
    fn expired_entries_leave_without_raising_the_floor() {
        let mut memory = ReplayMemory::new(Stored::default(), 2, 1, NOW);
        memory.remember(Room::Ordinary, "a", NOW + 1000, NOW);
        memory.remember(Room::Ordinary, "b", NOW + 2000, NOW);
        memory.remember(Room::Ordinary, "c", NOW + HOUR, NOW + 5000);
        assert_eq!(memory.floor_ms(Room::Ordinary), 0);
        assert_eq!(memory.forgotten(Room::Ordinary), 0);
        assert_eq!(memory.len(Room::Ordinary, NOW + 5000), 1);
    }

    #[test]
    fn the_floor_survives_a_restart_and_an_old_file_is_read() {
        let mut memory = ReplayMemory::new(Stored::default(), 1, 1, NOW);
        memory.remember(Room::Priority, "s1", NOW + HOUR, NOW);
        memory.remember(Room::Priority, "s2", NOW + 2 * HOUR, NOW);
        let text = serde_json::to_string(memory.stored()).unwrap();
        let disk: OnDisk = serde_json::from_str(&text).unwrap();
        let restarted = ReplayMemory::new(disk.into(), 1, 1, NOW + 1000);
        assert_eq!(restarted.floor_ms(Room::Priority), NOW + HOUR);
        assert_eq!(
            restarted.check(Room::Priority, "s2", NOW + 2 * HOUR),
            Err(Refusal::Seen)
        );
        // Before rooms: a flat map of id to expiry.
        let disk: OnDisk =
            serde_json::from_str(&format!(r#"{{"old-1": {}, "gone": 5}}"#, NOW + HOUR)).unwrap();
        let upgraded = ReplayMemory::new(disk.into(), 10, 10, NOW);
        assert_eq!(upgraded.len(Room::Ordinary, NOW), 1);
        assert_eq!(
            upgraded.check(Room::Ordinary, "old-1", NOW + HOUR),
            Err(Refusal::Seen)
        );
    }

    #[test]
    fn a_smaller_capacity_at_start_forgets_the_soonest() {
        let mut memory = ReplayMemory::new(Stored::default(), 3, 1, NOW);
        fill(&mut memory, Room::Ordinary, 3, NOW + HOUR);
        memory.remember(Room::Ordinary, "late", NOW + 2 * HOUR, NOW);
        let shrunk = ReplayMemory::new(memory.stored().clone(), 1, 1, NOW);
        assert_eq!(shrunk.len(Room::Ordinary, NOW), 1);
        assert_eq!(shrunk.floor_ms(Room::Ordinary), NOW + HOUR);
        assert_eq!(
            shrunk.check(Room::Ordinary, "late", NOW + 2 * HOUR),
            Err(Refusal::Seen)
        );
    }
}
