//! The map of every stream's record in the state: a list sorted by stream
//! id, with the parts of a `BTreeMap`'s interface the supervisor uses.
//! Records are read in id order and new streams are rare, so a sorted list
//! is built in place as it is read (a `BTreeMap` is built from a second copy
//! of every record, 5 MB at 10 000 streams) and looked up by binary search.

use serde::{Deserialize, Serialize};

/// Every stream's record, sorted by stream id, one record per id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMap<V> {
    sorted: Vec<(String, V)>,
}

impl<V> Default for StreamMap<V> {
    fn default() -> Self {
        StreamMap { sorted: Vec::new() }
    }
}

impl<V> StreamMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of records given in strictly increasing id order (as a query
    /// ordered by id returns them); anything else is sorted, and of two
    /// records of one id the later is kept, as a map's `collect` would.
    pub fn from_sorted(mut sorted: Vec<(String, V)>) -> Self {
        sort_keeping_later(&mut sorted, |(id, _)| id);
        StreamMap { sorted }
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.sorted.binary_search_by(|(k, _)| k.as_str().cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&V> {
        self.find(id).ok().map(|i| &self.sorted[i].1)
    }

    /// Where `id` is (`Ok`) or would go (`Err`), for a walk over streams in
    /// id order (see [`locate_in_order`]).
    fn locate_in_order(&self, id: &str, cursor: &mut usize) -> Result<usize, usize> {
        locate_in_order(
            self.sorted.len(),
            |i| self.sorted[i].0.as_str(),
            id,
            cursor,
            || self.find(id),
        )
    }

    /// [`StreamMap::get`] in a walk in id order (see `cursor` above).
    pub fn get_in_order(&self, id: &str, cursor: &mut usize) -> Option<&V> {
        let i = self.locate_in_order(id, cursor).ok()?;
        Some(&self.sorted[i].1)
    }

    /// [`StreamMap::get_mut`] in a walk in id order (see `cursor` above).
    pub fn get_mut_in_order(&mut self, id: &str, cursor: &mut usize) -> Option<&mut V> {
        let i = self.locate_in_order(id, cursor).ok()?;
        Some(&mut self.sorted[i].1)
    }

    /// The record of `id` in a walk in id order, made with `make` if there
    /// is none, and whether it was made.
    pub fn get_or_insert_in_order(
        &mut self,
        id: &str,
        cursor: &mut usize,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        match self.locate_in_order(id, cursor) {
            Ok(i) => (&mut self.sorted[i].1, false),
            Err(i) => {
                self.sorted.insert(i, (id.to_string(), make()));
                *cursor = i + 1;
                (&mut self.sorted[i].1, true)
            }
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.find(id).ok().map(|i| &mut self.sorted[i].1)
    }

    pub fn get_key_value(&self, id: &str) -> Option<(&String, &V)> {
        self.find(id).ok().map(|i| {
            let (k, v) = &self.sorted[i];
            (k, v)
        })
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    /// Puts `value` under `id`; the record it replaces, if any.
    pub fn insert(&mut self, id: String, value: V) -> Option<V> {
        match self.find(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.sorted[i].1, value)),
            Err(i) => {
                self.sorted.insert(i, (id, value));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<V> {
        self.find(id).ok().map(|i| self.sorted.remove(i).1)
    }

    /// The place of `id`, to make its record there if there is none.
    pub fn entry(&mut self, id: String) -> Entry<'_, V> {
        Entry { map: self, id }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn clear(&mut self) {
        self.sorted.clear();
    }

    /// Every (id, record), in id order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + ExactSizeIterator {
        self.sorted.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.sorted.iter().map(|(k, _)| k)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.sorted.iter_mut().map(|(_, v)| v)
    }
}

/// Sorts `items` by `key` (unless they are strictly increasing already)
/// and keeps one item a key: of two, the later, as a map's `collect` would.
pub fn sort_keeping_later<T, K: Ord + ?Sized>(items: &mut Vec<T>, key: impl Fn(&T) -> &K) {
    if items.is_sorted_by(|a, b| key(a) < key(b)) {
        return;
    }
    items.sort_by(|a, b| key(a).cmp(key(b)));
    items.dedup_by(|later, earlier| {
        let same = key(later) == key(earlier);
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
}

/// Where `id` is (`Ok`) or would go (`Err`) among `len` ids in increasing
/// order, `id_at(i)` the i-th, for a walk over streams in id order: `cursor`
/// (0 at the start of the walk) is tried first and moved past the place
/// found, so a walk over every stream costs one comparison a stream (two for
/// an id that is not there) rather than a binary search. An id asked out of
/// order is found by `search` (a binary search of the same ids).
pub fn locate_in_order<'a>(
    len: usize,
    id_at: impl Fn(usize) -> &'a str,
    id: &str,
    cursor: &mut usize,
    search: impl FnOnce() -> Result<usize, usize>,
) -> Result<usize, usize> {
    // Everything before the cursor sorts before `id` (true in an ordered
    // walk; checked, so any other walk is still answered right): then `id`
    // is at the cursor or nowhere, unless the cursor's own id sorts before it.
    let after_the_ones_before = || *cursor == 0 || (*cursor <= len && id_at(*cursor - 1) < id);
    let here = (*cursor < len).then(|| id_at(*cursor));
    let found = match here {
        Some(here) if here == id => Ok(*cursor),
        Some(here) if here > id && after_the_ones_before() => Err(*cursor),
        None if after_the_ones_before() => Err(*cursor),
        _ => search(),
    };
    *cursor = match found {
        Ok(i) => i + 1,
        Err(i) => i,
    };
    found
}

/// A place in the map for one id (only `or_default` and `or_insert_with`).
pub struct Entry<'a, V> {
    map: &'a mut StreamMap<V>,
    id: String,
}

impl<'a, V> Entry<'a, V> {
    pub fn or_insert_with(self, make: impl FnOnce() -> V) -> &'a mut V {
        let i = match self.map.find(&self.id) {
            Ok(i) => i,
            Err(i) => {
                self.map.sorted.insert(i, (self.id, make()));
                i
            }
        };
        &mut self.map.sorted[i].1
    }

    pub fn or_default(self) -> &'a mut V
    where
        V: Default,
    {
        self.or_insert_with(V::default)
    }
}

/// `map[id]`: the record of `id`, which must be there (as a `BTreeMap`'s).
impl<V> std::ops::Index<&str> for StreamMap<V> {
    type Output = V;
    fn index(&self, id: &str) -> &V {
        self.get(id)
            .unwrap_or_else(|| panic!("no stream {id:?} in the map"))
    }
}

impl<V> FromIterator<(String, V)> for StreamMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(items: I) -> Self {
        StreamMap::from_sorted(items.into_iter().collect())
    }
}

impl<V> IntoIterator for StreamMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.sorted.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a StreamMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&(String, V)) -> (&String, &V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.sorted.iter().map(|(k, v)| (k, v))
    }
}

/// Written as a JSON object in id order, as the `BTreeMap` was.
impl<V: Serialize> Serialize for StreamMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StreamMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = StreamMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of stream ids to records")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut items = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(item) = m.next_entry()? {
                    items.push(item);
                }
                Ok(StreamMap::from_sorted(items))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The same operations on a `StreamMap` and on a `BTreeMap` leave the
    /// same contents, in the same order, with the same answers.
    #[test]
    fn it_behaves_as_a_btree_map_of_the_same_operations() {
        let mut ours: StreamMap<u32> = StreamMap::new();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        // A fixed pseudo-random walk over a few ids: inserts, removes,
        // lookups, entries.
        let ids = ["b", "a", "c", "aa", "", "é", "B", "ab"];
        let mut x: u32 = 12345;
        for step in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let id = ids[(x >> 16) as usize % ids.len()];
            match (x >> 8) % 5 {
                0 => assert_eq!(ours.insert(id.into(), step), model.insert(id.into(), step)),
                1 => assert_eq!(ours.remove(id), model.remove(id)),
                2 => *ours.entry(id.into()).or_default() += 1,
                3 if step % 2 == 0 => *ours.entry(id.into()).or_insert_with(|| 7) += 2,
                3 => {
                    let mut cursor = (x >> 4) as usize % 9;
                    let (v, made) = ours.get_or_insert_in_order(id, &mut cursor, || 7);
                    *v += 2;
                    assert_eq!(made, !model.contains_key(id));
                }
                _ => {
                    assert_eq!(ours.get(id), model.get(id));
                    // From any cursor, right or not, the answer is `get`'s.
                    let mut cursor = (x >> 3) as usize % 10;
                    assert_eq!(ours.get_in_order(id, &mut cursor), model.get(id));
                    let mut cursor = (x >> 5) as usize % 10;
                    let found = ours.get_mut_in_order(id, &mut cursor).map(|v| *v);
                    assert_eq!(found.as_ref(), model.get(id));
                }
            }
            match (x >> 8) % 5 {
                2 => *model.entry(id.into()).or_default() += 1,
                3 => *model.entry(id.into()).or_insert_with(|| 7) += 2,
                _ => {}
            }
            assert_eq!(ours.len(), model.len());
            assert_eq!(ours.contains_key(id), model.contains_key(id));
            assert!(ours.iter().eq(model.iter()), "step {step}");
            // A walk in order (with an id asked twice and one missing) finds
            // what `get` finds.
            let mut cursor = 0;
            for probe in [
                "", "a", "a", "aa", "ab", "abc", "b", "B", "c", "é", "b", "zz",
            ] {
                assert_eq!(
                    ours.get_in_order(probe, &mut cursor),
                    model.get(probe),
                    "{probe:?}"
                );
            }
        }
    }

    #[test]
    fn records_out_of_order_or_twice_are_sorted_and_the_later_kept() {
        let map = StreamMap::from_sorted(vec![
            ("c".to_string(), 1),
            ("a".to_string(), 2),
            ("c".to_string(), 3),
            ("b".to_string(), 4),
        ]);
        let got: Vec<(&str, i32)> = map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("a", 2), ("b", 4), ("c", 3)]);
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"a":2,"b":4,"c":3}"#);
        let back: StreamMap<i32> = serde_json::from_str(r#"{"c":1,"a":2}"#).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["a", "c"]);
    }
}
