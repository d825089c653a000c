//! Fetching whole DAGs: every block under a root, many at a time, for verification and mirroring.

use std::collections::VecDeque;

use cid::Cid;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::dagpb::{PbNode, DAG_PB};
use super::{BlockSource, TreeError};

/// Gets every block reachable from `root` through `source` (which keeps what it fetches),
/// `concurrency` at a time. Subtrees whose root `skip` accepts are not descended into;
/// `on_block` sees the size of each block as it arrives. Returns the number of blocks.
pub async fn fetch_dag(
    source: &dyn BlockSource,
    root: Cid,
    concurrency: usize,
    skip: impl Fn(&Cid) -> bool,
    mut on_block: impl FnMut(u64),
) -> Result<u64, TreeError> {
    let mut pending = VecDeque::from([root]);
    let mut in_flight = FuturesUnordered::new();
    let mut count = 0;
    loop {
        while in_flight.len() < concurrency.max(1) {
            let Some(cid) = pending.pop_front() else {
                break;
            };
            if skip(&cid) {
                continue;
            }
            in_flight.push(async move { (cid, source.block(&cid).await) });
        }
        let Some((cid, block)) = in_flight.next().await else {
            return Ok(count);
        };
        let block = block?;
        count += 1;
        on_block(block.len() as u64);
        if cid.codec() == DAG_PB {
            let node = PbNode::decode(&block)?;
            pending.extend(node.links.iter().map(|l| l.cid));
        }
    }
}
