//! `adjtimex(2)` with `modes = 0`: reads the kernel's clock discipline state (what NTP or chrony
//! set) and changes nothing, so it needs no privilege.

use std::io;

/// The kernel clock's discipline state, as `adjtimex(2)` returns it. Units are the kernel's:
/// `offset` and `jitter` are in microseconds, or nanoseconds when `status` has `STA_NANO`;
/// `freq`, `ppsfreq` and `stabil` in 2^-16 ppm; `maxerror`, `esterror` and `tick` in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// The call's return value: `TIME_OK` (0) ... `TIME_ERROR` (5, not synchronised).
    pub state: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub status: i32,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i32,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i32,
}

/// Reads the clock state without adjusting anything.
// `c_long` is i64 here but i32 on 32-bit targets, where the conversions are not useless.
#[allow(clippy::useless_conversion)]
pub fn read_clock_state() -> io::Result<ClockState> {
    #[allow(unsafe_code)]
    // SAFETY: `libc::timex` is a plain C struct of integers, a `timeval` and padding, for which
    // all-zero bytes are a valid value; zero `modes` is also what makes the call read-only.
    let mut buf: libc::timex = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    // SAFETY: `buf` is a valid, exclusively borrowed `timex` that outlives the call; the kernel
    // writes only within it.
    let state = unsafe { libc::adjtimex(&mut buf) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ClockState {
        state,
        offset: i64::from(buf.offset),
        freq: i64::from(buf.freq),
        maxerror: i64::from(buf.maxerror),
        esterror: i64::from(buf.esterror),
        status: buf.status,
        constant: i64::from(buf.constant),
        tick: i64::from(buf.tick),
        ppsfreq: i64::from(buf.ppsfreq),
        jitter: i64::from(buf.jitter),
        shift: buf.shift,
        stabil: i64::from(buf.stabil),
        jitcnt: i64::from(buf.jitcnt),
        calcnt: i64::from(buf.calcnt),
        errcnt: i64::from(buf.errcnt),
        stbcnt: i64::from(buf.stbcnt),
        tai: buf.tai,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_without_privilege_and_changes_nothing() {
        let first = read_clock_state().expect("adjtimex with modes 0 is allowed to anyone");
        // Any kernel ticks between 1 and 1,000,000 microseconds (HZ 1 to 1,000,000).
        assert!((1..=1_000_000).contains(&first.tick), "{first:?}");
        assert!((0..=5).contains(&first.state), "{first:?}");
        let second = read_clock_state().expect("second read");
        assert_eq!(
            first.tick, second.tick,
            "a read-only call must not change the tick"
        );
        assert_eq!(first.status, second.status);
    }
}
