//! `install/install.sh` and `install/ipns-registry.service` as an administrator uses them: the
//! script stages a whole installation into a `--destdir` root (every file and mode checked),
//! upgrades keep config and data, uninstall keeps them unless `--purge`; the unit passes
//! `systemd-analyze verify` and has the hardening the issue asks for.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("install/ipns-registry.service")).expect("read the unit")
}

/// Runs `install/install.sh ARGS` with the binary under test.
fn install_sh(args: &[&str]) -> Output {
    Command::new("sh")
        .arg(repo().join("install/install.sh"))
        .args(args)
        .output()
        .expect("run install.sh")
}

/// `install.sh --destdir ROOT --binary BIN ARGS`, which must succeed; returns its stdout.
fn stage(root: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "--destdir",
        root.to_str().expect("utf-8 path"),
        "--binary",
        common::binary(),
    ];
    all.extend_from_slice(args);
    let out = install_sh(&all);
    assert!(
        out.status.success(),
        "install.sh {all:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file and directory under `root`: path (from `/`) -> (is a directory, mode bits).
fn tree(root: &Path) -> BTreeMap<String, (bool, u32)> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, (bool, u32)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
            let path = format!(
                "/{}",
                entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
            );
            into.insert(path, (meta.is_dir(), meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                walk(root, &entry.path(), into);
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(root, root, &mut into);
    into
}

/// Runs `systemd-analyze verify` on `unit` (a unit file's text) whose ExecStart is pointed at
/// `binary`; returns its combined output, failing on a non-zero exit.
fn systemd_verify(unit: &str, binary: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ipns-registry.service");
    let exec_start = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    let command = exec_start
        .trim_start_matches("ExecStart=")
        .split_whitespace()
        .next()
        .expect("a command");
    std::fs::write(&path, unit.replace(command, binary)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (Debian: apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    text
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let output = systemd_verify(&unit_text(), common::binary());
    assert_eq!(output.trim(), "", "warnings from systemd-analyze verify");
}

#[test]
fn unit_is_a_hardened_notify_service() {
    let unit = unit_text();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=ipns-registry",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "LimitNOFILE=65536",
        "ExecStart=/usr/bin/ipns-registry serve",
        "Environment=IPNS_REGISTRY_CONFIG=/etc/ipns-registry/config.toml",
        "Environment=IPNS_REGISTRY_DATA_DIR=/var/lib/ipns-registry",
        // mDNS and interface watching need a netlink socket (see the comment in the unit).
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    ] {
        assert!(has(line), "the unit lacks {line:?}");
    }
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
            .to_owned()
    };
    assert!(
        value("WatchdogSec").ends_with('s'),
        "WatchdogSec in seconds"
    );
    let max_mib: u64 = value("MemoryMax")
        .trim_end_matches('M')
        .parse()
        .expect("MemoryMax in MiB");
    assert!(
        (128..=512).contains(&max_mib),
        "a memory limit that suits a 1 GiB Pi, not {max_mib} MiB"
    );

    // systemd's own score of the sandbox: 0 (locked down) .. 10 (exposed).
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ipns-registry.service");
    std::fs::write(&path, &unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for ipns-registry.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(
        score <= 2.0,
        "exposure level {score} (systemd says OK up to 2.0)"
    );
}

#[test]
fn destdir_lays_down_every_file_with_its_mode() {
    let staging = tempfile::tempdir().expect("temp dir");
    let root = staging.path().join("root");
    let out = stage(&root, &[]);
    assert!(
        out.contains("wrote /etc/ipns-registry/config.toml"),
        "{out}"
    );
    assert!(out.contains("not done in a staging root"), "{out}");

    let found = tree(&root);
    let ours: Vec<(&str, bool, u32)> = vec![
        ("/usr/local/bin/ipns-registry", false, 0o755),
        ("/etc/systemd/system/ipns-registry.service", false, 0o644),
        ("/etc/ipns-registry", true, 0o750),
        ("/etc/ipns-registry/config.toml", false, 0o640),
        ("/var/lib/ipns-registry", true, 0o700),
        ("/usr/local/share/doc/ipns-registry/README.md", false, 0o644),
    ];
    for (path, dir, mode) in &ours {
        let got = found.get(*path);
        assert_eq!(got, Some(&(*dir, *mode)), "{path}: (is dir, mode) {got:?}");
    }
    // Nothing else: every other entry is a parent directory of one of ours.
    for (path, (dir, _)) in &found {
        let listed = ours.iter().any(|(p, _, _)| p == path);
        let parent = *dir
            && ours
                .iter()
                .any(|(p, _, _)| p.starts_with(&format!("{path}/")));
        assert!(listed || parent, "unexpected {path} in the staging root");
    }
    assert!(
        std::fs::read_dir(root.join("var/lib/ipns-registry"))
            .expect("data dir")
            .next()
            .is_none(),
        "the data directory starts empty"
    );

    // The binary is the one given, and it runs from there.
    let installed = root.join("usr/local/bin/ipns-registry");
    assert_eq!(
        std::fs::read(&installed).expect("installed binary"),
        std::fs::read(common::binary()).expect("binary under test")
    );
    let version = Command::new(&installed)
        .arg("--version")
        .output()
        .expect("run it");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ipns-registry "));

    // The installed unit runs the installed binary with the installed config and data dir,
    // and still verifies.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/ipns-registry.service"))
        .expect("staged unit");
    assert!(unit.contains("\nExecStart=/usr/local/bin/ipns-registry serve\n"));
    assert!(unit.contains("\nDocumentation=file:/usr/local/share/doc/ipns-registry/README.md\n"));
    systemd_verify(&unit, installed.to_str().expect("utf-8"));

    // The config is the writer example behind a header, and the node accepts it.
    let config =
        std::fs::read_to_string(root.join("etc/ipns-registry/config.toml")).expect("staged config");
    let example =
        std::fs::read_to_string(repo().join("config/writer.toml")).expect("writer example");
    assert!(config.ends_with(&example), "config/writer.toml, whole");
    assert!(config.starts_with("# ipns-registry configuration"));
    assert!(config.contains("/var/lib/ipns-registry"));
    let data = staging.path().join("id-check");
    let id = Command::new(&installed)
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(root.join("etc/ipns-registry/config.toml"))
        .args(["id", "--json"])
        .output()
        .expect("run id");
    assert!(id.status.success(), "{id:?}");
    let doc: serde_json::Value = serde_json::from_slice(&id.stdout).expect("id JSON");
    assert_eq!(doc["role"], "writer");
    assert!(doc["ipns_name"].as_str().expect("name").starts_with("k51"));
}

#[test]
fn rerun_upgrades_and_keeps_config_and_data() {
    let staging = tempfile::tempdir().expect("temp dir");
    let root = staging.path().join("root");
    stage(&root, &[]);
    let config = root.join("etc/ipns-registry/config.toml");
    let mut edited = std::fs::read_to_string(&config).expect("config");
    edited.push_str("\n# edited by the administrator\n");
    std::fs::write(&config, &edited).expect("edit config");
    let block = root.join("var/lib/ipns-registry/blocks");
    std::fs::create_dir_all(&block).expect("data");
    std::fs::write(block.join("a-block"), b"data").expect("data file");
    // An older binary in place: the upgrade must replace it.
    std::fs::write(root.join("usr/local/bin/ipns-registry"), b"old").expect("old binary");

    let out = stage(&root, &[]);
    assert!(
        out.contains("kept the existing /etc/ipns-registry/config.toml"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    assert_eq!(std::fs::read(block.join("a-block")).expect("data"), b"data");
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/ipns-registry")).expect("binary"),
        std::fs::read(common::binary()).expect("binary under test")
    );
}

#[test]
fn uninstall_keeps_config_and_data_unless_purge() {
    let staging = tempfile::tempdir().expect("temp dir");
    let root = staging.path().join("root");
    stage(&root, &[]);
    std::fs::write(root.join("var/lib/ipns-registry/marker"), b"x").expect("data file");

    stage(&root, &["--uninstall"]);
    for gone in [
        "usr/local/bin/ipns-registry",
        "etc/systemd/system/ipns-registry.service",
        "usr/local/share/doc/ipns-registry",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after --uninstall");
    }
    assert!(root.join("etc/ipns-registry/config.toml").is_file());
    assert!(root.join("var/lib/ipns-registry/marker").is_file());

    // Installing again finds the kept config.
    let out = stage(&root, &[]);
    assert!(out.contains("kept the existing"), "{out}");

    stage(&root, &["--uninstall", "--purge"]);
    for gone in [
        "usr/local/bin/ipns-registry",
        "etc/ipns-registry",
        "var/lib/ipns-registry",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after --purge");
    }
}

#[test]
fn refuses_what_it_cannot_install() {
    let staging = tempfile::tempdir().expect("temp dir");
    let root = staging.path().join("root");
    let root_arg = root.to_str().expect("utf-8");
    let bad_config = staging.path().join("bad.toml");
    std::fs::write(&bad_config, "role = \"emperor\"\n").expect("write bad config");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--destdir",
                root_arg,
                "--binary",
                "/nonexistent/ipns-registry",
            ],
            "no binary at /nonexistent/ipns-registry",
        ),
        (
            vec!["--destdir", root_arg, "--binary", "/bin/true"],
            "is not ipns-registry",
        ),
        (
            vec![
                "--destdir",
                root_arg,
                "--binary",
                common::binary(),
                "--config",
                bad_config.to_str().expect("utf-8"),
            ],
            "is not a valid configuration",
        ),
        (
            vec!["--destdir", root_arg, "--purge"],
            "--purge only goes with --uninstall",
        ),
        (vec!["--frobnicate"], "unknown argument: --frobnicate"),
    ];
    for (args, message) in cases {
        let out = install_sh(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(
        !root.join("usr/local/bin/ipns-registry").exists(),
        "nothing installed by a refused run"
    );
}
