//! Replays, through the fuzz targets' own bodies (`fuzz/src/lib.rs`), every input that once
//! crashed a target (`tests/fixtures/fuzz/<target>/`) and the seed inputs (`fuzz/seeds/`), so a
//! fixed crash stays fixed and the bodies themselves build and run with the normal test suite.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .map(|e| {
            let path = e.path();
            let bytes = std::fs::read(&path).expect("readable input");
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_recorded_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (target, body) in fuzz_bodies::TARGETS {
        let mut seen = 0;
        for dir in [
            root.join("tests/fixtures/fuzz").join(target),
            root.join("fuzz/seeds").join(target),
        ] {
            for (path, bytes) in inputs(&dir) {
                eprintln!("{target}: {path}");
                body(&bytes);
                seen += 1;
            }
        }
        assert!(seen > 0, "no seed or regression input for {target}");
        replayed += seen;
    }
    eprintln!("{replayed} inputs replayed");
}
