//! The memory store's id → record map, built so that its memory follows the
//! number of records rather than the hash table's growth steps.
//!
//! A hash map that holds its entries inline pays for its free buckets in whole
//! entries: just after it doubles it is less than half full, and an 80-byte
//! record then costs about 170 bytes. Here the hash table holds only a `u32`
//! slot number per bucket (5 bytes with its control byte), and the records live
//! in fixed-size chunks that are allocated one at a time: the only slack is the
//! rest of the last chunk and the slots of removed records, which the next
//! inserts reuse first.
//!
//! It knows nothing of sessions beyond "a key and a value".

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

/// Records per chunk: small enough that one unused chunk per shard is a
/// rounding error, large enough that the chunk list stays short. The unit
/// tests use small chunks, so that they cross chunk boundaries often.
#[cfg(not(test))]
const CHUNK: usize = 1024;
#[cfg(test)]
const CHUNK: usize = 8;

pub(super) struct Table<K, V> {
    index: HashTable<u32>,
    chunks: Vec<Vec<Option<(K, V)>>>,
    /// Slots emptied by removals, reused before the last chunk grows.
    free: Vec<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Self { index: HashTable::new(), chunks: Vec::new(), free: Vec::new(), hasher: Default::default() }
    }
}

fn slot<K, V>(chunks: &[Vec<Option<(K, V)>>], i: u32) -> &(K, V) {
    let i = i as usize;
    chunks[i / CHUNK][i % CHUNK].as_ref().expect("an indexed slot is occupied")
}

impl<K: Hash + Eq, V> Table<K, V> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let chunks = &self.chunks;
        let at = *self.index.find(self.hasher.hash_one(key), |&i| slot(chunks, i).0 == *key)?;
        Some(&slot(chunks, at).1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let chunks = &self.chunks;
        let at = *self.index.find(self.hasher.hash_one(key), |&i| slot(chunks, i).0 == *key)? as usize;
        self.chunks[at / CHUNK][at % CHUNK].as_mut().map(|(_, v)| v)
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(&key) {
            return Some(std::mem::replace(v, value));
        }
        let at = match self.free.pop() {
            Some(at) => {
                let i = at as usize;
                self.chunks[i / CHUNK][i % CHUNK] = Some((key, value));
                at
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = self.chunks.len();
                let last = &mut self.chunks[n - 1];
                last.push(Some((key, value)));
                u32::try_from((n - 1) * CHUNK + last.len() - 1).expect("fewer than 2^32 records per table")
            }
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let hash = hasher.hash_one(&slot(chunks, at).0);
        self.index.insert_unique(hash, at, |&i| hasher.hash_one(&slot(chunks, i).0));
        None
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let chunks = &self.chunks;
        let entry = self.index.find_entry(self.hasher.hash_one(key), |&i| slot(chunks, i).0 == *key).ok()?;
        let at = entry.remove().0;
        let i = at as usize;
        let (_, value) = self.chunks[i / CHUNK][i % CHUNK].take().expect("an indexed slot is occupied");
        if self.index.is_empty() {
            // Give the memory back once nothing is left, but the first chunk:
            // a shard that goes between none and one session must not free
            // and reserve a chunk each time.
            self.chunks.truncate(1);
            self.chunks.iter_mut().for_each(Vec::clear);
            self.free = Vec::new();
            self.index = HashTable::new();
        } else {
            self.free.push(at);
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Get(u16),
        Bump(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, so inserts, replacements and removals meet the same keys;
        // several chunks' worth, so slots cross chunk boundaries and are reused.
        let key = 0u16..(8 * CHUNK as u16);
        prop_oneof![
            (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            key.clone().prop_map(Op::Remove),
            key.clone().prop_map(Op::Get),
            key.prop_map(Op::Bump),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut table = Table::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(table.remove(&k), model.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(table.get(&k), model.get(&k)),
                    Op::Bump(k) => {
                        if let Some(v) = table.get_mut(&k) {
                            *v = v.wrapping_add(1);
                        }
                        if let Some(v) = model.get_mut(&k) {
                            *v = v.wrapping_add(1);
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(table.get(k), Some(v));
            }
            // Every slot is either indexed or free: nothing leaks.
            let slots: usize = table.chunks.iter().map(Vec::len).sum();
            prop_assert_eq!(slots, table.len() + table.free.len());
            prop_assert!(table.chunks.iter().rev().skip(1).all(|c| c.len() == CHUNK));
        }
    }

    #[test]
    fn memory_is_given_back_when_empty() {
        let mut table = Table::default();
        for k in 0..5000u32 {
            table.insert(k, k);
        }
        assert_eq!(table.chunks.len(), 5000usize.div_ceil(CHUNK));
        for k in 0..5000u32 {
            assert_eq!(table.remove(&k), Some(k));
        }
        assert!(table.chunks.len() == 1 && table.chunks[0].is_empty(), "one chunk kept, empty");
        assert!(table.free.is_empty() && table.len() == 0);
        assert_eq!(table.get(&1), None);
        table.insert(7, 7);
        assert_eq!((table.get(&7), table.chunks.len()), (Some(&7), 1));
    }
}
