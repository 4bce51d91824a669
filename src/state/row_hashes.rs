//! The hash of each stream's stored row, by stream id: what lets a write
//! touch only the rows whose text changed. Kept beside the cached state for
//! as long as the cache lives. The ids sit one after another in a single
//! buffer, in id order, each row pointing at its own: a separate copy of
//! every id cost a 32-byte allocation a stream (two thirds of this list's
//! memory at 10 000 streams).

use crate::supervise::stream_map::locate_in_order;

/// Row hashes in id order.
#[derive(Debug, Default)]
pub(super) struct RowHashes {
    /// Every id ever put in, one after another; a removed row's id stays
    /// until the cache is read again.
    ids: String,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Copy)]
struct Row {
    start: u32,
    len: u32,
    hash: u64,
}

impl RowHashes {
    /// Room for `rows` rows whose ids take `id_bytes` in all.
    pub(super) fn with_capacity(rows: usize, id_bytes: usize) -> RowHashes {
        RowHashes {
            ids: String::with_capacity(id_bytes),
            rows: Vec::with_capacity(rows),
        }
    }

    fn id_of(&self, row: &Row) -> &str {
        &self.ids[row.start as usize..(row.start + row.len) as usize]
    }

    fn row_for(&mut self, id: &str, hash: u64) -> Row {
        let start = u32::try_from(self.ids.len()).expect("ids under 4 GB");
        self.ids.push_str(id);
        Row {
            start,
            len: id.len() as u32,
            hash,
        }
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.rows.binary_search_by(|row| self.id_of(row).cmp(id))
    }

    /// Adds a row read after every row already here (the read is ordered by
    /// id); a row out of order is put in its place, and a second row of an
    /// id replaces the first.
    pub(super) fn push_read(&mut self, id: &str, hash: u64) {
        match self.rows.last() {
            Some(last) if self.id_of(last) >= id => self.insert(id, hash),
            _ => {
                let row = self.row_for(id, hash);
                self.rows.push(row);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Every id, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|row| self.id_of(row))
    }

    /// Sets the hash of `id`'s row, adding the row if there is none.
    pub(super) fn insert(&mut self, id: &str, hash: u64) {
        match self.find(id) {
            Ok(i) => self.rows[i].hash = hash,
            Err(i) => {
                let row = self.row_for(id, hash);
                self.rows.insert(i, row);
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        if let Ok(i) = self.find(id) {
            self.rows.remove(i);
        }
    }

    /// The hash of `id`'s row in a walk in id order, the row added with
    /// `hash` if there is none, and whether it was added. As
    /// `StreamMap::get_or_insert_in_order`: `cursor` (0 at the start of the
    /// walk) is tried first and moved past the place found; an id asked out
    /// of order is searched for.
    pub(super) fn get_or_insert_in_order(
        &mut self,
        id: &str,
        cursor: &mut usize,
        hash: u64,
    ) -> (&mut u64, bool) {
        let found = locate_in_order(
            self.rows.len(),
            |i| self.id_of(&self.rows[i]),
            id,
            cursor,
            || self.find(id),
        );
        match found {
            Ok(i) => (&mut self.rows[i].hash, false),
            Err(i) => {
                let row = self.row_for(id, hash);
                self.rows.insert(i, row);
                *cursor = i + 1;
                (&mut self.rows[i].hash, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::stream_map::StreamMap;

    /// Random reads, inserts, removals and walks from any cursor answer as
    /// the stream map of copied ids did (the oracle).
    #[test]
    fn answers_as_a_map_of_copied_ids() {
        let mut rng = crate::test_rng::Xorshift::new(0x2545_f491_4f6c_dd1d);
        let mut next = |n: u64| rng.below(n);
        for round in 0..200 {
            let mut ours = RowHashes::default();
            let mut oracle: StreamMap<u64> = StreamMap::new();
            // Read in order, now and then out of order or twice.
            let mut read: Vec<String> = (0..next(40)).map(|i| format!("s-{:03}", i * 3)).collect();
            if round % 5 == 0 && read.len() > 2 {
                let last = read.len() - 1;
                read.swap(0, last);
                let again = read[1].clone();
                read.push(again);
            }
            for (n, id) in read.iter().enumerate() {
                ours.push_read(id, n as u64);
                oracle.insert(id.clone(), n as u64);
            }
            for step in 0..60 {
                let id = format!("s-{:03}", next(130));
                match next(4) {
                    0 => {
                        ours.insert(&id, step);
                        oracle.insert(id, step);
                    }
                    1 => {
                        ours.remove(&id);
                        oracle.remove(&id);
                    }
                    _ => {
                        // A walk over some ids in order, from a cursor that
                        // may be anywhere.
                        let mut ids: Vec<String> = (0..next(8))
                            .map(|_| format!("s-{:03}", next(130)))
                            .collect();
                        ids.sort();
                        let start = next(ours.len() as u64 + 2) as usize;
                        let (mut at_ours, mut at_oracle) = (start, start);
                        for id in &ids {
                            let (mine, made) = ours.get_or_insert_in_order(id, &mut at_ours, step);
                            let (theirs, made_too) =
                                oracle.get_or_insert_in_order(id, &mut at_oracle, || step);
                            assert_eq!((*mine, made), (*theirs, made_too), "{id}");
                            *mine += 1;
                            *theirs += 1;
                        }
                    }
                }
                let ours_now: Vec<(&str, u64)> =
                    ours.rows.iter().map(|r| (ours.id_of(r), r.hash)).collect();
                let oracle_now: Vec<(&str, u64)> =
                    oracle.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                assert_eq!(ours_now, oracle_now, "round {round} step {step}");
                assert!(ours.ids().eq(oracle.keys().map(String::as_str)));
            }
        }
    }
}
