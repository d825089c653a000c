//! The mark of garbage collection: every block reachable from the roots that must survive.

use bytes::Bytes;
use cid::Cid;
use serde::{Deserialize, Serialize};

use super::dagpb::{PbNode, DAG_PB};
use super::TreeError;
use crate::store::{BlockSet, StoreError};

/// What a mark reached.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkReport {
    /// Roots walked (the own tree, followed trees, each counted once).
    pub roots: u64,
    /// Blocks reached.
    pub blocks_marked: u64,
    /// Directory or file nodes reached but not stored here, so not descended into: normal for
    /// a followed tree fetched only in part; for the own tree, `check` tells more.
    pub blocks_missing: u64,
    /// Nodes stored here that are not valid dag-pb (kept, not descended into).
    pub blocks_undecodable: u64,
}

/// Marks every block reachable from `roots` into `marked` (blocks already in it are not walked
/// again), reading dag-pb nodes through `read`; raw leaves have no links and are marked
/// without being read. Nodes `read` does not find are counted, never fetched: marking keeps
/// what is here, it does not complete it. Blocking (reads blocks).
pub fn mark_blocking(
    read: &dyn Fn(&Cid) -> Result<Option<Bytes>, StoreError>,
    roots: &[Cid],
    marked: &mut BlockSet,
    report: &mut MarkReport,
) -> Result<(), TreeError> {
    for root in roots {
        report.roots += 1;
        let mut pending = vec![*root];
        while let Some(cid) = pending.pop() {
            if !marked.insert(&cid) {
                continue;
            }
            report.blocks_marked += 1;
            if cid.codec() != DAG_PB {
                continue;
            }
            let Some(block) = read(&cid)? else {
                report.blocks_missing += 1;
                continue;
            };
            match PbNode::decode(&block) {
                Ok(node) => pending.extend(node.links.into_iter().map(|l| l.cid)),
                Err(_) => report.blocks_undecodable += 1,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::BlockStore;
    use crate::tree::{encode_directory, FileImporter, Link};

    #[test]
    fn marks_files_and_directories_and_counts_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let mut importer = FileImporter::new(&store);
        importer
            .write(&vec![7u8; crate::tree::CHUNK_SIZE * 2 + 10])
            .unwrap();
        let (file, _) = importer.finish().unwrap();
        // A directory linking the stored file and a directory that is not stored.
        let absent = Link {
            cid: crate::tree::cid_of(DAG_PB, b"not stored"),
            tsize: 10,
        };
        let entries = BTreeMap::from([("file".to_owned(), file), ("gone".to_owned(), absent)]);
        let (root, blocks) = encode_directory(&entries).unwrap();
        for (cid, data) in &blocks {
            store.put_blocking(cid, data).unwrap();
        }
        let mut marked = BlockSet::new();
        let mut report = MarkReport::default();
        let read = |cid: &Cid| store.peek_blocking(cid);
        mark_blocking(&read, &[root.cid, root.cid], &mut marked, &mut report).unwrap();
        // The root, the file node, its three leaves (two alike: one block) and the absent node.
        assert_eq!(report.blocks_marked, 5, "{report:?}");
        assert_eq!(report.blocks_missing, 1);
        assert_eq!(report.roots, 2);
        assert!(marked.contains(&file.cid) && marked.contains(&absent.cid));
    }
}
