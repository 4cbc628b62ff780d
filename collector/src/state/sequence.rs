//! `SeqWindow`: one agent's sequence numbers, as a window of the last `WINDOW` numbers below
//! its newest, with one bit per number saying whether it arrived.
//!
//! Within the window a number is new, late (an older message replayed from the agent's
//! outbox after live data) or a duplicate (a QoS 1 redelivery). Outside it, it is refused:
//! a forged `seq` far ahead would otherwise make every real message a "duplicate" and count
//! billions of missed ones. A number that never arrived is an open gap while it is inside the
//! window (it may still come) and counts as missed once the window has moved past it.
//!
//! `WINDOW` is 32768: the agent's outbox keeps a day by default (`outbox.max_age_seconds`), and
//! a day of reports at an interval of 3 s or more, with their events, fits; so a day-old backlog
//! replayed after live data is still counted. 4 KiB per agent.

/// Width of the window, in sequence numbers; a multiple of 64.
pub const WINDOW: u64 = 32768;
/// The window's bitmap, in 64-bit words.
pub const WORDS: usize = (WINDOW / 64) as usize;

/// Where a sequence number falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Above every number seen so far (or the first one).
    Newest,
    /// Inside the window, below the newest, not seen before.
    Late,
    /// Seen before.
    Duplicate,
    /// Too far above the newest, or too far below it, to belong to this agent's sequence.
    OutOfWindow,
}

/// A window's whole contents, kept on disk across collector restarts (`saved.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowParts {
    pub top: Option<u64>,
    pub counted_from: u64,
    pub missed: u64,
    /// `WORDS` words.
    pub seen: Vec<u64>,
}

/// One agent's window. About 4 KiB.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    /// The newest number accepted or announced; none before the first.
    top: Option<u64>,
    /// Bit `n % WINDOW` is set when number `n` (within `top - WINDOW + 1 ..= top`) arrived.
    seen: Box<[u64; WORDS]>,
    /// Numbers below this were sent before the collector began to follow the agent, or before
    /// the agent's last reset: never counted as missed.
    counted_from: u64,
    missed: u64,
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self {
            top: None,
            seen: Box::new([0; WORDS]),
            counted_from: 0,
            missed: 0,
        }
    }
}

impl SeqWindow {
    /// Where `seq` falls, without changing anything.
    pub fn check(&self, seq: u64) -> SeqCheck {
        let Some(top) = self.top else {
            return SeqCheck::Newest;
        };
        if seq > top {
            return match seq - top > WINDOW {
                true => SeqCheck::OutOfWindow,
                false => SeqCheck::Newest,
            };
        }
        if top - seq >= WINDOW {
            return SeqCheck::OutOfWindow;
        }
        match self.is_seen(seq) {
            true => SeqCheck::Duplicate,
            false => SeqCheck::Late,
        }
    }

    /// Records `seq` as arrived; `check` must have said `Newest` or `Late`.
    pub fn record(&mut self, seq: u64) {
        match self.top {
            None => {
                self.top = Some(seq);
                self.counted_from = seq;
            }
            Some(top) if seq > top => self.advance(seq),
            Some(_) => {}
        }
        self.set_seen(seq);
    }

    /// A birth announced `next` as the number of the agent's next message. Lower than what
    /// was seen: the agent lost its state and counts afresh, so the window starts over there.
    /// Higher: the numbers in between were used while the collector was not listening; they
    /// may still arrive from the agent's outbox, and count as missed once the window passes.
    pub fn announce(&mut self, next: u64) {
        let Some(last) = next.checked_sub(1) else {
            self.restart_at(None, 0);
            return;
        };
        match self.top {
            None => self.restart_at(Some(last), next),
            Some(top) if next <= top => self.restart_at(Some(last), next),
            Some(top) if last > top => self.advance(last),
            Some(_) => {}
        }
    }

    /// Everything the window holds, to be saved.
    pub fn parts(&self) -> WindowParts {
        WindowParts {
            top: self.top,
            counted_from: self.counted_from,
            missed: self.missed,
            seen: self.seen.to_vec(),
        }
    }

    /// The window `parts` describe; none when the bitmap is not `WORDS` words long. Any
    /// bitmap of that length is a valid window: bit `n % WINDOW` stands for the one number
    /// `n` of the window that maps to it.
    pub fn from_parts(parts: WindowParts) -> Option<Self> {
        let seen: Box<[u64; WORDS]> = parts.seen.into_boxed_slice().try_into().ok()?;
        Some(Self {
            top: parts.top,
            seen,
            counted_from: parts.counted_from,
            missed: parts.missed,
        })
    }

    /// Whether a window has started (a message seen or a next number announced).
    pub fn started(&self) -> bool {
        self.top.is_some()
    }

    /// The newest number seen or announced.
    pub fn newest(&self) -> Option<u64> {
        self.top
    }

    /// Numbers the window has moved past without their message arriving.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Numbers inside the window, at or above where counting started, not arrived yet.
    pub fn open_gaps(&self) -> u64 {
        let Some(top) = self.top else {
            return 0;
        };
        let low = top.saturating_sub(WINDOW - 1).max(self.counted_from);
        if low > top {
            return 0;
        }
        (low..=top).filter(|seq| !self.is_seen(*seq)).count() as u64
    }

    fn restart_at(&mut self, top: Option<u64>, counted_from: u64) {
        self.top = top;
        self.counted_from = counted_from;
        self.seen.fill(0);
    }

    /// Moves the newest number up to `new_top`, counting the unseen numbers that leave the
    /// window as missed.
    fn advance(&mut self, new_top: u64) {
        let Some(top) = self.top else {
            self.restart_at(Some(new_top), new_top);
            return;
        };
        let distance = new_top.saturating_sub(top);
        if distance >= WINDOW {
            // Everything in the old window leaves it, and so does every number between it
            // and the new window, none of which can have arrived.
            let leaving = self.open_gaps();
            let skipped_from = top.saturating_add(1).max(self.counted_from);
            let new_low = new_top - (WINDOW - 1);
            let skipped = new_low.saturating_sub(skipped_from);
            self.missed = self.missed.saturating_add(leaving).saturating_add(skipped);
            self.seen.fill(0);
        } else {
            for seq in top + 1..=new_top {
                // The slot of `seq` held `seq - WINDOW`, which now leaves the window.
                if let Some(leaving) = seq.checked_sub(WINDOW)
                    && leaving >= self.counted_from
                    && !self.is_seen(leaving)
                {
                    self.missed = self.missed.saturating_add(1);
                }
                self.clear_seen(seq);
            }
        }
        self.top = Some(new_top);
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn is_seen(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.seen[word] & mask != 0
    }

    fn set_seen(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] |= mask;
    }

    fn clear_seen(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seqs: &[u64]) -> SeqWindow {
        let mut window = SeqWindow::default();
        for seq in seqs {
            assert!(matches!(
                window.check(*seq),
                SeqCheck::Newest | SeqCheck::Late
            ));
            window.record(*seq);
        }
        window
    }

    #[test]
    fn parts_round_trip() {
        let mut w = window(&[5, 6, 9]);
        w.record(9 + WINDOW);
        let back = SeqWindow::from_parts(w.parts()).unwrap();
        assert_eq!(back.parts(), w.parts());
        assert_eq!(
            (back.missed(), back.open_gaps()),
            (w.missed(), w.open_gaps())
        );
        let mut short = w.parts();
        short.seen.pop();
        assert!(SeqWindow::from_parts(short).is_none());
    }

    #[test]
    fn a_gap_is_open_until_the_window_passes_it() {
        let mut w = window(&[5, 6, 9]);
        assert_eq!((w.open_gaps(), w.missed()), (2, 0));
        assert_eq!(w.check(8), SeqCheck::Late);
        w.record(8);
        assert_eq!(w.check(8), SeqCheck::Duplicate);
        assert_eq!((w.open_gaps(), w.missed()), (1, 0));
        // 7 leaves the window once the newest is 7 + WINDOW.
        w.record(7 + WINDOW - 1);
        assert_eq!(w.missed(), 0);
        w.record(7 + WINDOW);
        assert_eq!(w.missed(), 1);
        assert_eq!(w.check(7), SeqCheck::OutOfWindow);
    }

    #[test]
    fn far_ahead_and_far_behind_are_out_of_the_window() {
        let w = window(&[100]);
        assert_eq!(w.check(100 + WINDOW), SeqCheck::Newest);
        assert_eq!(w.check(101 + WINDOW), SeqCheck::OutOfWindow);
        assert_eq!(w.check(u64::MAX), SeqCheck::OutOfWindow);
        let w = window(&[100 + WINDOW]);
        assert_eq!(w.check(101), SeqCheck::Late);
        assert_eq!(w.check(100), SeqCheck::OutOfWindow);
        assert_eq!(w.check(0), SeqCheck::OutOfWindow);
    }

    #[test]
    fn a_lower_announcement_starts_over_and_keeps_the_missed_count() {
        let mut w = window(&[10, 12]);
        w.record(12 + WINDOW);
        let missed = w.missed();
        assert_eq!(missed, 1, "11 left the window");
        assert_eq!(w.open_gaps(), WINDOW - 1, "13 and up may still come");
        w.announce(3);
        assert_eq!(w.newest(), Some(2));
        assert_eq!(w.check(3), SeqCheck::Newest);
        assert_eq!((w.open_gaps(), w.missed()), (0, missed));
        w.announce(0);
        assert!(!w.started());
        assert_eq!(w.check(0), SeqCheck::Newest);
    }

    #[test]
    fn a_higher_announcement_leaves_room_for_the_backlog() {
        let mut w = window(&[10]);
        w.announce(5000);
        assert_eq!(w.newest(), Some(4999));
        assert_eq!(w.open_gaps(), 4999 - 10);
        for seq in 11..4999 {
            assert_eq!(w.check(seq), SeqCheck::Late, "{seq}");
            w.record(seq);
        }
        assert_eq!(
            (w.open_gaps(), w.missed()),
            (1, 0),
            "4999 was announced, not seen"
        );
        // A first announcement counts nothing before it.
        let mut fresh = SeqWindow::default();
        fresh.announce(1_000_000);
        assert_eq!(fresh.open_gaps(), 0);
        assert_eq!(fresh.check(999_000), SeqCheck::Late);
        fresh.record(1_000_000 + WINDOW);
        assert_eq!(fresh.missed(), 1, "only 1_000_000 itself");
    }
}
