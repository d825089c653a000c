//! Buffers for reading large blocks, used again once their block is dropped.
//!
//! Streaming a blob reads a 1 MiB block file per MiB. A fresh buffer each time is memory the
//! allocator maps and the kernel zeroes, and unmaps again when the block has been sent: in a
//! `perf` of a raw blob `GET`, page faults, zeroing and unmapping took more of the server's
//! CPU than reading the file did. A few buffers kept for the next reads avoid that; a block
//! read while all are out gets a buffer of its own, as before.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::recent::MAX_RECENT_BLOCK;

/// Buffers kept for reuse. A blob `GET` holds one block being sent and one being read; a few
/// more serve parallel layer pulls. Kept buffers count in the idle RSS, up to this many MiB.
const KEPT_BUFFERS: usize = 4;
/// Smaller blocks get a buffer of their own: the allocator reuses small ones anyway, and a block
/// the recent-block cache may keep must not hold on to a larger kept buffer.
const POOLED_MIN: u64 = MAX_RECENT_BLOCK as u64 + 1;
/// Buffers larger than this are not kept (blocks are at most 1 MiB as we import them, and up to
/// 2 MiB from other implementations).
const KEPT_MAX: usize = (2 << 20) + 4096;

/// A set of buffers for block reads, shared by the blocks read into them.
#[derive(Debug, Default)]
pub(super) struct ReadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

/// A block's bytes in a buffer that goes back to its set when the block is dropped.
struct Pooled {
    data: Vec<u8>,
    home: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        if data.capacity() > KEPT_MAX {
            return;
        }
        data.clear();
        let mut free = self.home.free();
        if free.len() < KEPT_BUFFERS {
            free.push(data);
        }
    }
}

impl ReadBuffers {
    fn free(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the whole of `file` (`len` bytes by its metadata) into a kept buffer if one is
    /// free. Blocking.
    fn read(self: &Arc<Self>, file: &mut File, len: u64) -> std::io::Result<Bytes> {
        let kept = self.free().pop();
        let mut data = kept.unwrap_or_default();
        // The file's length is a hint only: read_to_end reads what is there.
        data.reserve(usize::try_from(len).unwrap_or(0).min(KEPT_MAX));
        file.read_to_end(&mut data)?;
        Ok(Bytes::from_owner(Pooled {
            data,
            home: self.clone(),
        }))
    }

    /// Buffers waiting for reuse now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free().len()
    }
}

/// Reads the file at `path` whole: into a kept buffer of `buffers` if it is large, else into a
/// buffer of its own. Blocking.
pub(super) fn read_block_file(buffers: &Arc<ReadBuffers>, path: &Path) -> std::io::Result<Bytes> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < POOLED_MIN {
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut data)?;
        return Ok(Bytes::from(data));
    }
    buffers.read(&mut file, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, len: usize, seed: u8) -> (std::path::PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        (path, bytes)
    }

    /// A buffer comes back when its block is dropped and serves the next read, which sees only
    /// its own bytes, also when it is shorter than the block before.
    #[test]
    fn buffers_are_reused_and_hold_only_their_block() {
        let dir = tempfile::tempdir().expect("tmp");
        let buffers = Arc::new(ReadBuffers::default());
        let (long, long_bytes) = write(dir.path(), "long", 1 << 20, 1);
        let (short, short_bytes) = write(dir.path(), "short", POOLED_MIN as usize, 2);
        let first = read_block_file(&buffers, &long).expect("read");
        assert_eq!(&first[..], &long_bytes[..]);
        let first_at = first.as_ptr();
        assert_eq!(buffers.kept(), 0);
        drop(first);
        assert_eq!(buffers.kept(), 1);
        let second = read_block_file(&buffers, &short).expect("read");
        assert_eq!(second.as_ptr(), first_at, "the kept buffer is used again");
        assert_eq!(&second[..], &short_bytes[..]);
        // A slice of the block keeps the buffer out until it goes too.
        let tail = second.slice(100..);
        drop(second);
        assert_eq!(buffers.kept(), 0);
        drop(tail);
        assert_eq!(buffers.kept(), 1);
    }

    /// At most KEPT_BUFFERS are kept; small blocks and oversized buffers are never kept.
    #[test]
    fn only_a_few_large_buffers_are_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let buffers = Arc::new(ReadBuffers::default());
        let (path, bytes) = write(dir.path(), "block", 1 << 20, 3);
        let blocks: Vec<Bytes> = (0..KEPT_BUFFERS + 3)
            .map(|_| read_block_file(&buffers, &path).expect("read"))
            .collect();
        assert!(blocks.iter().all(|b| b[..] == bytes[..]));
        drop(blocks);
        assert_eq!(buffers.kept(), KEPT_BUFFERS);

        let buffers = Arc::new(ReadBuffers::default());
        let (small, small_bytes) = write(dir.path(), "small", 1000, 4);
        let block = read_block_file(&buffers, &small).expect("read");
        assert_eq!(&block[..], &small_bytes[..]);
        drop(block);
        assert_eq!(buffers.kept(), 0, "a small block is not pooled");
        let (huge, huge_bytes) = write(dir.path(), "huge", 3 << 20, 5);
        let block = read_block_file(&buffers, &huge).expect("read");
        assert_eq!(&block[..], &huge_bytes[..]);
        drop(block);
        assert_eq!(buffers.kept(), 0, "an oversized buffer is not kept");
    }
}
