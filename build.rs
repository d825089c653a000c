//! Link options of the `ipns-registry` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR) instead of one 24-byte entry each: the
        // binary's relocation table shrinks from about 830 KB to a few KB, and the loader reads
        // all of it at every start, so an idle node maps 0.8 MiB less (issue 8). Needs
        // binutils >= 2.38 to link and glibc >= 2.36 to run (Debian 12, Raspberry Pi OS 12).
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
