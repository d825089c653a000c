//! OCI content digests (`sha256:<hex>`, `sha512:<hex>`) and incremental hashing.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, 64 hex characters.
    Sha256,
    /// SHA-512, 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings and storage paths.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name as used in storage paths.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded`, or the encoding is wrong for the algorithm.
    #[error("invalid digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
    Malformed(String),
    /// A well-formed digest with an algorithm this registry does not implement.
    #[error("unsupported digest algorithm in {0:?}: sha256 and sha512 are supported")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding of the hash.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Builds a digest from an algorithm and a hex string read from storage paths.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Self, DigestError> {
        format!("{}:{hex}", algorithm.name()).parse()
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, encoded) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        // The spec's grammar: algorithm-component ([a-z0-9]+) separated by [+._-].
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !alg_ok || !enc_ok {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let algorithm = Algorithm::from_name(alg)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(s.to_owned()))?;
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: encoded.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Incremental hashing under one algorithm.
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The algorithm it hashes with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// Bytes a [`ParallelHasher`] hashes on the caller's thread before it starts its own: small
/// blobs (configs, manifests) do not pay for a thread.
const INLINE_BYTES: u64 = 4 * 1024 * 1024;

/// Batches queued for a [`ParallelHasher`]'s thread: enough to ride out a slow moment of
/// either side, few enough to keep memory flat (a batch is one chunk of up to 1 MiB, or frames
/// of a request body adding up to [`BATCH_BYTES`] or a little more).
const QUEUED_BATCHES: usize = 4;

/// Bytes gathered before they go to a [`ParallelHasher`]'s thread: a request body comes in
/// frames of a few KiB to a few hundred, and waking the thread for each cost more than hashing
/// the small ones.
const BATCH_BYTES: usize = 256 * 1024;

/// A [`Hasher`] that hashes large content on a thread of its own, so that a blob's digest and
/// the CIDs of its chunks (hashed by the importer on the caller's thread) use two cores.
pub struct ParallelHasher {
    state: ParallelState,
}

enum ParallelState {
    /// Hashing on the caller's thread; `fed` bytes so far. `threadless`: a thread was asked
    /// for and could not be had, so this content stays inline.
    Inline {
        hasher: Box<Hasher>,
        fed: u64,
        threadless: bool,
    },
    /// Hashing on the thread, which returns the hasher when `batches` closes.
    Threaded {
        batches: std::sync::mpsc::SyncSender<Vec<bytes::Bytes>>,
        thread: std::thread::JoinHandle<Hasher>,
        /// Bytes gathered for the next batch, and how many.
        gathered: Vec<bytes::Bytes>,
        gathered_len: usize,
    },
}

impl ParallelHasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        ParallelHasher {
            state: ParallelState::Inline {
                hasher: Box::new(Hasher::new(algorithm)),
                fed: 0,
                threadless: false,
            },
        }
    }

    /// Feeds bytes. Blocks while the hashing thread is [`QUEUED_BATCHES`] batches behind.
    pub fn update(&mut self, data: bytes::Bytes) {
        match &mut self.state {
            ParallelState::Threaded {
                batches,
                gathered,
                gathered_len,
                ..
            } => {
                *gathered_len += data.len();
                gathered.push(data);
                if *gathered_len >= BATCH_BYTES {
                    *gathered_len = 0;
                    // A send fails only if the thread panicked; `finish` reports that.
                    let _ = batches.send(std::mem::take(gathered));
                }
            }
            ParallelState::Inline {
                hasher,
                fed,
                threadless,
            } => {
                hasher.update(&data);
                *fed += data.len() as u64;
                if *fed >= INLINE_BYTES && !*threadless {
                    self.start_thread();
                }
            }
        }
    }

    fn start_thread(&mut self) {
        let ParallelState::Inline {
            hasher, threadless, ..
        } = &mut self.state
        else {
            return;
        };
        let algorithm = hasher.algorithm();
        // The thread gets the hasher only once it exists: if no thread can be had (a process
        // limit), the hasher is still here and hashing goes on inline.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<bytes::Bytes>>(QUEUED_BATCHES);
        let (hasher_tx, hasher_rx) = std::sync::mpsc::sync_channel::<Hasher>(1);
        let spawned = std::thread::Builder::new()
            .name("digest".into())
            .spawn(move || {
                // The sender below never fails to send: this thread is waiting.
                let mut hasher = hasher_rx.recv().unwrap_or_else(|_| Hasher::new(algorithm));
                while let Ok(batch) = rx.recv() {
                    for bytes in batch {
                        hasher.update(&bytes);
                    }
                }
                hasher
            });
        match spawned {
            Ok(thread) => {
                let hasher = std::mem::replace(hasher.as_mut(), Hasher::new(algorithm));
                // The thread holds the receiver until it has the hasher: this cannot fail.
                let _ = hasher_tx.send(hasher);
                self.state = ParallelState::Threaded {
                    batches: tx,
                    thread,
                    gathered: Vec::new(),
                    gathered_len: 0,
                };
            }
            Err(e) => {
                tracing::debug!("hashing on the caller's thread: no thread for it ({e})");
                *threadless = true;
            }
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self.state {
            ParallelState::Inline { hasher, .. } => hasher.finish(),
            ParallelState::Threaded {
                batches,
                thread,
                gathered,
                ..
            } => {
                if !gathered.is_empty() {
                    let _ = batches.send(gathered);
                }
                drop(batches);
                match thread.join() {
                    Ok(hasher) => hasher.finish(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .expect("valid");
        assert_eq!(d, Digest::of(Algorithm::Sha256, b""));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "nocolon".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        let upper = "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert!(upper.parse::<Digest>().is_err());
        let d512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(
            d512.to_string().parse::<Digest>().expect("round trip"),
            d512
        );
    }

    #[test]
    fn a_parallel_hasher_gives_the_digest_of_everything_fed() {
        let data: Vec<u8> = (0..20u32 * 1024 * 1024 / 4)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            // Small content stays inline; large content crosses to the thread mid-way, with
            // chunks of every size on both sides of the switch.
            for len in [0, 1, 4 * 1024 * 1024, data.len()] {
                let mut hasher = ParallelHasher::new(algorithm);
                let mut rest = &data[..len];
                let mut size = 1;
                while !rest.is_empty() {
                    let n = size.min(rest.len());
                    hasher.update(bytes::Bytes::copy_from_slice(&rest[..n]));
                    rest = &rest[n..];
                    size = size * 3 + 7;
                }
                assert_eq!(
                    hasher.finish(),
                    Digest::of(algorithm, &data[..len]),
                    "{algorithm:?}, {len} bytes"
                );
            }
        }
    }
}
