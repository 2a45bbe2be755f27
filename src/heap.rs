//! Giving the heap's free pages back to the system after large, short-lived allocations (a
//! round's answers written to disk, an exposition rendered): glibc keeps them otherwise, and
//! a thousand apps' answers, freed between the snapshots that stay, would be held as RSS for
//! good.

/// Returns the free pages of every malloc arena to the system (`malloc_trim(0)`); nothing
/// where the allocator is not glibc's.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: `malloc_trim` takes no pointer and touches only memory malloc owns and no
        // longer hands out: it advises the kernel to drop the free pages of each arena.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The resident memory of this process, in KiB.
    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Frees 16 MiB in holes between blocks that stay, and gives it back: the resident KiB
    /// before and after.
    fn holes_given_back() -> (u64, u64) {
        // 256 blocks of 64 KiB (below glibc's mmap threshold: on the heap), each followed by
        // one of 4 KiB that stays, so that freeing them leaves holes free() never returns.
        let mut kept = Vec::new();
        let mut freed = Vec::new();
        for n in 0..256u32 {
            freed.push(vec![n as u8 | 1; 64 << 10]);
            kept.push(vec![n as u8; 4 << 10]);
        }
        drop(freed);
        let before = resident_kib();
        super::release();
        let after = resident_kib();
        assert!(kept
            .iter()
            .enumerate()
            .all(|(n, block)| block[4095] == n as u8));
        (before, after)
    }

    #[test]
    fn the_free_pages_between_blocks_still_held_go_back_to_the_system() {
        // Other tests allocate and give back at the same time: one of a few tries is enough.
        let tries: Vec<(u64, u64)> = (0..5).map(|_| holes_given_back()).collect();
        assert!(
            tries
                .iter()
                .any(|(before, after)| *before >= after + (8 << 10)),
            "resident KiB before and after: {tries:?}"
        );
    }
}
