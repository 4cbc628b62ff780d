//! The announcement queue: pure ordering and admission, no audio. Highest priority first, then
//! first come first served; an identical announcement inside the collapse window is collapsed
//! into the one already waiting or playing; the queue is bounded, and what does not fit is
//! refused and reported, never silently lost.

use std::collections::VecDeque;
use std::time::Duration;

use pantau_protocol::sound::{AnnounceArgs, OnPreempt, Priority};
use tokio::time::Instant;

/// One announcement to play.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// The command id, or `<entry>@<unix seconds>` for a scheduled one.
    pub id: String,
    pub args: AnnounceArgs,
    /// Wall-clock expiry (Unix ms): not started after it.
    pub expires_ms: Option<i64>,
    /// When it was taken (monotonic), for the collapse window.
    pub received: Instant,
    /// The schedule entry it plays, if scheduled: the `schedule` label of its events, so the
    /// collector can put scheduled plays in the history.
    pub schedule: Option<String>,
}

impl Announcement {
    pub fn priority(&self) -> Priority {
        self.args.priority
    }

    /// Two announcements are identical when they would sound the same.
    fn same_content(&self, other: &Announcement) -> bool {
        let (a, b) = (&self.args, &other.args);
        a.text == b.text
            && a.clip == b.clip
            && a.tone == b.tone
            && a.priority == b.priority
            && a.voice == b.voice
    }
}

/// Why an announcement was not queued.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Queued,
    /// Identical to `into`, waiting or playing, received within the window.
    Collapsed {
        into: String,
    },
    /// The queue is full of announcements at least as urgent.
    Full,
    /// Queued, and the lowest, newest waiting announcement was pushed out to make room.
    QueuedDisplacing(Announcement),
}

/// Waiting announcements.
#[derive(Debug)]
pub struct Queue {
    waiting: VecDeque<Announcement>,
    capacity: usize,
    collapse_window: Duration,
}

impl Queue {
    pub fn new(capacity: usize, collapse_window: Duration) -> Self {
        Self {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            collapse_window,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Admits `announcement`; `playing` is what plays now, for collapsing.
    pub fn push(
        &mut self,
        announcement: Announcement,
        playing: Option<&Announcement>,
    ) -> Admission {
        let recent = |other: &Announcement| {
            announcement
                .received
                .saturating_duration_since(other.received)
                <= self.collapse_window
                && announcement.same_content(other)
        };
        if let Some(into) = playing
            .into_iter()
            .chain(self.waiting.iter())
            .find(|other| recent(other))
        {
            return Admission::Collapsed {
                into: into.id.clone(),
            };
        }
        let mut displaced = None;
        if self.waiting.len() >= self.capacity {
            // Make room by dropping the newest of the least urgent, if it is less urgent.
            let lowest = self.waiting.iter().map(Announcement::priority).min();
            match lowest {
                Some(lowest) if lowest < announcement.priority() => {
                    let index = self
                        .waiting
                        .iter()
                        .rposition(|waiting| waiting.priority() == lowest);
                    displaced = index.and_then(|index| self.waiting.remove(index));
                }
                _ => return Admission::Full,
            }
        }
        self.insert(announcement);
        match displaced {
            Some(displaced) => Admission::QueuedDisplacing(displaced),
            None => Admission::Queued,
        }
    }

    /// Puts a pre-empted announcement back at the head of its priority (it resumes from the
    /// start), if its policy says so and there is room.
    pub fn requeue(&mut self, announcement: Announcement) -> bool {
        if announcement.args.on_preempt == OnPreempt::Drop || self.waiting.len() >= self.capacity {
            return false;
        }
        let index = self
            .waiting
            .iter()
            .position(|waiting| waiting.priority() <= announcement.priority())
            .unwrap_or(self.waiting.len());
        self.waiting.insert(index, announcement);
        true
    }

    /// The most urgent waiting priority.
    #[cfg(test)]
    pub fn top_priority(&self) -> Option<Priority> {
        self.waiting.front().map(Announcement::priority)
    }

    pub fn pop(&mut self) -> Option<Announcement> {
        self.waiting.pop_front()
    }

    /// Removes and returns every waiting announcement that `matches`.
    pub fn remove_where(&mut self, matches: impl Fn(&Announcement) -> bool) -> Vec<Announcement> {
        let (removed, kept): (VecDeque<_>, VecDeque<_>) =
            self.waiting.drain(..).partition(|a| matches(a));
        self.waiting = kept;
        removed.into()
    }

    /// Behind everything of the same or higher priority, ahead of anything lower.
    fn insert(&mut self, announcement: Announcement) {
        let index = self
            .waiting
            .iter()
            .position(|waiting| waiting.priority() < announcement.priority())
            .unwrap_or(self.waiting.len());
        self.waiting.insert(index, announcement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(id: &str, text: &str, priority: Priority, at: Instant) -> Announcement {
        Announcement {
            id: id.to_owned(),
            args: AnnounceArgs {
                text: Some(text.to_owned()),
                priority,
                ..AnnounceArgs::default()
            },
            expires_ms: None,
            received: at,
            schedule: None,
        }
    }

    fn ids(queue: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop().map(|a| a.id)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn highest_priority_first_then_arrival() {
        let now = Instant::now();
        let mut queue = Queue::new(10, Duration::from_secs(60));
        queue.push(announcement("s1", "a", Priority::Scheduled, now), None);
        queue.push(announcement("o1", "b", Priority::Operator, now), None);
        queue.push(announcement("e1", "c", Priority::Emergency, now), None);
        queue.push(announcement("o2", "d", Priority::Operator, now), None);
        assert_eq!(queue.top_priority(), Some(Priority::Emergency));
        assert_eq!(ids(&mut queue), ["e1", "o1", "o2", "s1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn identical_announcements_collapse_within_the_window() {
        let now = Instant::now();
        let mut queue = Queue::new(10, Duration::from_secs(60));
        let playing = announcement("p", "masker", Priority::Alert, now);
        let later = now + Duration::from_secs(30);
        assert_eq!(
            queue.push(
                announcement("x", "masker", Priority::Alert, later),
                Some(&playing)
            ),
            Admission::Collapsed {
                into: "p".to_owned()
            }
        );
        // Another priority, or outside the window, is not identical.
        assert_eq!(
            queue.push(
                announcement("y", "masker", Priority::Emergency, later),
                Some(&playing)
            ),
            Admission::Queued
        );
        let much_later = now + Duration::from_secs(61);
        assert_eq!(
            queue.push(
                announcement("z", "masker", Priority::Alert, much_later),
                Some(&playing)
            ),
            Admission::Queued
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_or_displaces_the_least_urgent() {
        let now = Instant::now();
        let mut queue = Queue::new(2, Duration::ZERO);
        queue.push(announcement("s1", "a", Priority::Scheduled, now), None);
        queue.push(announcement("s2", "b", Priority::Scheduled, now), None);
        assert_eq!(
            queue.push(announcement("s3", "c", Priority::Scheduled, now), None),
            Admission::Full
        );
        match queue.push(announcement("a1", "d", Priority::Alert, now), None) {
            Admission::QueuedDisplacing(displaced) => assert_eq!(displaced.id, "s2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ids(&mut queue), ["a1", "s1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_preempted_announcement_resumes_first_in_its_priority_unless_it_drops() {
        let now = Instant::now();
        let mut queue = Queue::new(10, Duration::ZERO);
        queue.push(announcement("o2", "b", Priority::Operator, now), None);
        assert!(queue.requeue(announcement("o1", "a", Priority::Operator, now)));
        let mut dropping = announcement("o3", "c", Priority::Operator, now);
        dropping.args.on_preempt = OnPreempt::Drop;
        assert!(!queue.requeue(dropping));
        assert_eq!(ids(&mut queue), ["o1", "o2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_removes_what_matches() {
        let now = Instant::now();
        let mut queue = Queue::new(10, Duration::ZERO);
        queue.push(announcement("s1", "a", Priority::Scheduled, now), None);
        queue.push(announcement("a1", "b", Priority::Alert, now), None);
        let removed = queue.remove_where(|a| a.priority() <= Priority::Operator);
        assert_eq!(removed.len(), 1);
        assert_eq!(ids(&mut queue), ["a1"]);
    }
}
