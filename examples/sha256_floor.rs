//! SHA-256 throughput of this CPU with the `sha2` crate the node hashes with: the floor that
//! `scripts/bench.sh` compares a push's server CPU time against.
//!
//! ```text
//! cargo run --release --example sha256_floor -- [MIB] [ROUNDS]
//! ```
//!
//! Hashes a MIB MiB buffer (default 256) ROUNDS times (default 5) in 1 MiB updates, as a
//! streamed upload is hashed, and prints the best round's rate as `sha256_mb_per_s <MB/s>`
//! (MB = 10^6 bytes). `scripts/bench.sh` also builds this file alone (only `sha2`) so a run
//! does not need the test dependencies built in release mode.

use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    // Not zeros: the bytes do not change SHA-256's cost, but a non-trivial pattern keeps any
    // future optimiser from seeing through the buffer.
    let buf: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    let mut best = f64::MAX;
    let mut digest = Vec::new();
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let mut hasher = Sha256::new();
        for chunk in buf.chunks(1024 * 1024) {
            hasher.update(chunk);
        }
        digest = hasher.finalize().to_vec();
        best = best.min(start.elapsed().as_secs_f64());
    }
    // The best round: the floor is what the CPU can do, not what a noisy neighbour left over.
    println!("sha256_mb_per_s {:.1}", buf.len() as f64 / best / 1e6);
    eprintln!("sha256 of the buffer: {}", hex_string(&digest));
}

/// Lower-case hex of `bytes` (printed so the hashing cannot be optimised away).
fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
