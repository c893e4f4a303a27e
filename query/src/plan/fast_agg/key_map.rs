//! Packed key → group index: open addressing with linear probing, each slot
//! holding its key and group together so that a lookup in a table bigger
//! than the caches costs one miss, and prefetching for rows ahead.

/// `n` empty slots, written now. `vec![[0; 2]; n]` would be a calloc: fresh
/// pages mapped to the kernel's zero page, so the first probe (a read) and
/// the first insert (a write) fault twice, and the copy-on-write fault
/// flushes the TLB of every core running the query — 34 % of
/// `count(DISTINCT user_id)` went to those IPIs.
fn zeroed(n: usize) -> Vec<[u64; 2]> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, [0; 2]);
    v
}

/// The map.
pub(super) struct KeyMap {
    /// [key, group index + 1]; 0 marks an empty slot.
    slots: Vec<[u64; 2]>,
    len: usize,
    shift: u32,
}

impl KeyMap {
    pub(super) fn new() -> KeyMap {
        KeyMap { slots: zeroed(256), len: 0, shift: 64 - 8 }
    }

    /// Bytes held.
    pub(super) fn size(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<[u64; 2]>()
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        // Fibonacci hashing: the top bits of key × 2^64/φ.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Asks the CPU to fetch `key`'s slot before it is looked up.
    #[inline]
    pub(super) fn prefetch(&self, key: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(self.slot(key)) as *const i8);
    }

    /// The group of `key`, or `next` (inserted) when it is new.
    #[inline]
    pub(super) fn get_or_insert(&mut self, key: u64, next: u32) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let [k, id] = self.slots[i];
            if id == 0 {
                break;
            }
            if k == key {
                return id as u32 - 1;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = [key, next as u64 + 1];
        self.len += 1;
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
        next
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, zeroed(cap));
        self.shift -= 1;
        let mask = cap - 1;
        for [k, id] in old {
            if id == 0 {
                continue;
            }
            let mut i = self.slot(k);
            while self.slots[i][1] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = [k, id];
        }
    }
}

/// The keys alone, for GROUP BY without aggregates (what `count(DISTINCT x)`
/// becomes): 8 bytes a slot instead of 16, so a million user ids take half
/// the cache.
pub(super) struct KeySet {
    /// 0 marks an empty slot; the key 0 itself is `has_zero`.
    slots: Vec<u64>,
    has_zero: bool,
    len: usize,
    shift: u32,
}

impl KeySet {
    pub(super) fn new() -> KeySet {
        KeySet { slots: zeroed_keys(256), has_zero: false, len: 0, shift: 64 - 8 }
    }

    /// Bytes held.
    pub(super) fn size(&self) -> usize {
        self.slots.capacity() * 8
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Asks the CPU to fetch `key`'s slot before it is looked up.
    #[inline]
    pub(super) fn prefetch(&self, key: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(self.slot(key)) as *const i8);
    }

    /// Adds `key`; true when it was not there yet.
    #[inline]
    pub(super) fn insert(&mut self, key: u64) -> bool {
        if key == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let k = self.slots[i];
            if k == 0 {
                break;
            }
            if k == key {
                return false;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = key;
        self.len += 1;
        if self.len * 2 > self.slots.len() {
            let cap = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, zeroed_keys(cap));
            self.shift -= 1;
            for k in old.into_iter().filter(|&k| k != 0) {
                let mut i = self.slot(k);
                while self.slots[i] != 0 {
                    i = (i + 1) & (cap - 1);
                }
                self.slots[i] = k;
            }
        }
        true
    }
}

/// See [`zeroed`].
#[allow(clippy::slow_vector_initialization)] // the point: not a calloc
fn zeroed_keys(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0);
    v
}

#[inline]
fn prefetch(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint that never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_assigns_dense_ids_and_survives_growth() {
        let mut m = KeyMap::new();
        let keys: Vec<u64> = (0..10_000u64).map(|i| i.wrapping_mul(0x1_0000_0001) ^ (i << 40)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get_or_insert(*k, i as u32), i as u32);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get_or_insert(*k, u32::MAX - 1), i as u32, "key {k} kept its id");
        }
        assert_eq!(m.len, keys.len());
        let mut set = KeySet::new();
        assert_eq!(keys[0], 0, "the key 0 is covered");
        for k in &keys {
            assert!(set.insert(*k), "{k} is new");
        }
        assert!(keys.iter().all(|k| !set.insert(*k)));
    }
}
