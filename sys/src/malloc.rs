//! glibc malloc tuning for a small, long-running process. Elsewhere (musl, other libcs) both
//! functions do nothing and say so.

/// Caps how many malloc arenas glibc creates (`M_ARENA_MAX`). By default every thread that
/// allocates while another holds the main arena's lock gets its own arena, which keeps its
/// freed memory; a process with a handful of threads and little allocation loses nothing by
/// sharing one. Call before any other thread starts. Returns whether the limit was applied.
pub fn limit_arenas(arenas: u16) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallopt takes two integers, touches only malloc's own settings and is safe to
        // call at any time; it returns 1 on success.
        let applied = unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::from(arenas)) };
        applied == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = arenas;
        false
    }
}

/// Hands free heap memory back to the kernel (`malloc_trim(0)`): glibc only returns the top of
/// the heap by itself, so memory freed after start-up (config parsing, first rounds) would stay
/// resident. Returns whether any memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim takes the amount of padding to keep and only walks malloc's own
        // arenas under their locks; it is safe to call from any thread at any time.
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_succeed_on_glibc() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(limit_arenas(8));
        } else {
            assert!(!limit_arenas(8));
        }
        // Whether anything was free to release depends on the heap; the call must not fail.
        let _ = release_free_memory();
        let block = vec![1_u8; 4 << 20];
        drop(block);
        let _ = release_free_memory();
    }
}
