//! `ipns-registry user add|remove|list` on the real binary: passwords from standard input only,
//! an htpasswd file of mode 0600 that Apache's `htpasswd` and a running node both accept, and
//! a node that authenticates users of files made by Apache's `htpasswd -B` and refuses to start
//! with entries it cannot check.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{binary, TestNode};

/// Made with `htpasswd -nbB -C 5 carol looking-glass` (Apache 2.4), so this test does not
/// depend on apache2-utils being installed.
const APACHE_CAROL: &str = "carol:$2y$05$hiVReACqKc71kxMhykYVDOArvFT3D46OOlRNx9.7RYYvMWwx5eGIy";

/// Runs `ipns-registry --data-dir DIR ARGS` with `stdin` on its standard input, outside any
/// controlling terminal (so that a password prompt cannot wait for a person).
fn run(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(binary());
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawn ipns-registry");
    if let Some(text) = stdin {
        let written = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
        // A command refused before it reads its input exits first: the pipe is then closed.
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apache_htpasswd() -> bool {
    Command::new("htpasswd")
        .arg("-h")
        .output()
        .is_ok_and(|o| !o.stderr.is_empty() || !o.stdout.is_empty())
}

/// The status of `GET /v2/` with these Basic credentials.
async fn login(base: &str, user: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v2/"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("GET /v2/")
        .status()
        .as_u16()
}

#[tokio::test]
async fn user_add_list_remove_with_password_stdin() {
    let node = TestNode::init("writer");
    let dir = node.data_dir();
    let file = dir.join("htpasswd");

    let out = run(
        dir,
        &["user", "add", "alice", "--password-stdin"],
        Some("wonder land:1\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added user alice"),
        "{}",
        stdout(&out)
    );
    let out = run(
        dir,
        &["user", "add", "bob", "--password-stdin"],
        Some("builder\r\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Owner-only, bcrypt as `htpasswd -B` writes it, no password in clear.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("htpasswd exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("alice:$2y$10$") && lines[0].len() == "alice:".len() + 60);
    assert!(lines[1].starts_with("bob:$2y$10$"));
    assert!(!text.contains("wonder") && !text.contains("builder"));

    // `list` prints names only.
    let out = run(dir, &["user", "list"], None);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "alice\nbob\n");

    // Adding an existing user changes the password, in place.
    let out = run(
        dir,
        &["user", "add", "alice", "--password-stdin", "--cost", "4"],
        Some("second\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("changed the password of alice"));
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with("alice:$2y$04$"), "{text}");
    assert_eq!(stdout(&run(dir, &["user", "list"], None)), "alice\nbob\n");

    // A running node takes the file as the CLI wrote it.
    let mut node = node;
    node.serve(&[]);
    let base = node.url();
    assert_eq!(login(&base, "alice", "second").await, 200);
    assert_eq!(login(&base, "alice", "wonder land:1").await, 401);
    assert_eq!(login(&base, "bob", "builder").await, 200);
    assert_eq!(login(&base, "bob", "builder\r").await, 401);

    // Removing applies to the running node too (within a second or so).
    let dir = node.data_dir().to_owned();
    let out = run(&dir, &["user", "remove", "bob"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&run(&dir, &["user", "list"], None)), "alice\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while login(&base, "bob", "builder").await != 401 {
        assert!(Instant::now() < deadline, "bob can still log in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(login(&base, "alice", "second").await, 200);

    let out = run(&dir, &["user", "remove", "bob"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no user \"bob\""), "{}", stderr(&out));
}

#[test]
fn passwords_never_come_from_the_command_line() {
    let node = TestNode::init("writer");
    let dir = node.data_dir();
    // No argument or flag takes a password.
    for args in [
        &["user", "add", "alice", "wonderland"][..],
        &["user", "add", "alice", "--password", "wonderland"],
        &["user", "add", "alice", "--password=wonderland"],
    ] {
        let out = run(dir, args, Some("x\n"));
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&out).contains("unexpected argument"),
            "{}",
            stderr(&out)
        );
    }
    // Without --password-stdin the password comes from the terminal; with none, a clear error.
    let out = run(dir, &["user", "add", "alice"], Some("wonderland\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
    // Bad input is refused before anything is written.
    for (args, stdin, what) in [
        (
            &["user", "add", "a:b", "--password-stdin"][..],
            "pw\n",
            "':'",
        ),
        (
            &["user", "add", "*", "--password-stdin"],
            "pw\n",
            "any authenticated user",
        ),
        (
            &["user", "add", "alice", "--password-stdin"],
            "\n",
            "no password",
        ),
        (
            &["user", "add", "alice", "--password-stdin", "--cost", "3"],
            "pw\n",
            "4..=31",
        ),
        (
            &["user", "add", "alice", "--password-stdin"],
            &"x".repeat(73),
            "72 bytes",
        ),
    ] {
        let out = run(dir, args, Some(stdin));
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(what), "{args:?}: {}", stderr(&out));
    }
    assert!(!dir.join("htpasswd").exists());
}

#[tokio::test]
async fn a_node_takes_apache_htpasswd_files_and_refuses_other_schemes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("users.htpasswd");
    std::fs::write(
        &file,
        format!("# made by Apache htpasswd\n{APACHE_CAROL}\n"),
    )
    .expect("write");
    let apache = apache_htpasswd();
    if apache {
        // Written by Apache itself, bcrypt at its default cost, password from stdin.
        let mut child = Command::new("htpasswd")
            .args(["-B", "-i"])
            .arg(&file)
            .arg("dave")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("htpasswd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"through the mirror\n")
            .expect("write");
        assert!(child.wait().expect("htpasswd").success());
    } else {
        eprintln!("apache2-utils not installed: checking the fixed Apache-made entry only");
    }

    // `user add` into the same file keeps Apache's entries, and Apache's htpasswd accepts ours.
    let data = tmp.path().join("data");
    let htpasswd = file.to_str().expect("utf-8 path");
    let out = run(
        &data,
        &[
            "user",
            "--htpasswd",
            htpasswd,
            "add",
            "erin",
            "--password-stdin",
        ],
        Some("erin's pw\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    if apache {
        for (password, ok) in [("erin's pw", true), ("wrong", false)] {
            let mut child = Command::new("htpasswd")
                .args(["-v", "-i"])
                .arg(&file)
                .arg("erin")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("htpasswd -v");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(password.as_bytes())
                .expect("write");
            assert_eq!(
                child.wait().expect("htpasswd -v").success(),
                ok,
                "{password}"
            );
        }
    }

    let mut node = TestNode::init("writer");
    node.serve(&["--htpasswd", htpasswd]);
    let base = node.url();
    assert_eq!(login(&base, "carol", "looking-glass").await, 200);
    assert_eq!(login(&base, "carol", "looking-glas").await, 401);
    assert_eq!(login(&base, "erin", "erin's pw").await, 200);
    if apache {
        assert_eq!(login(&base, "dave", "through the mirror").await, 200);
    }
    node.kill();

    // An entry of another scheme stops the start, naming the user; so does a bad rule.
    let md5 = tmp.path().join("md5.htpasswd");
    std::fs::write(
        &md5,
        format!("{APACHE_CAROL}\nfrank:$apr1$QJ8dBXcT$Wb1G6b1f2pZcVnUeGE4nN0\n"),
    )
    .expect("write");
    let err = start_failure(
        node.data_dir(),
        &["--htpasswd", md5.to_str().expect("utf-8")],
    );
    assert!(
        err.contains("frank") && err.contains("Apache MD5") && err.contains("bcrypt"),
        "{err}"
    );
    let config = tmp.path().join("bad-rule.toml");
    std::fs::write(
        &config,
        "[[auth.access]]\nprefix = \"Team\"\npush = [\"alice\"]\n",
    )
    .expect("write");
    let err = start_failure(
        node.data_dir(),
        &["--config", config.to_str().expect("utf-8")],
    );
    assert!(
        err.contains("auth.access[0]") && err.contains("Team"),
        "{err}"
    );
}

/// Runs `serve` with `args` and expects it to fail at start; returns its standard error.
fn start_failure(data_dir: &Path, args: &[&str]) -> String {
    let (global, serve): (Vec<&str>, Vec<&str>) = match args {
        ["--config", file] => (vec!["--config", file], vec![]),
        other => (vec![], other.to_vec()),
    };
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(&global)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .args(&serve)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(!status.success(), "serve {args:?} succeeded");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        !stdout(&out).contains("listening on http://"),
        "{}",
        stdout(&out)
    );
    stderr(&out)
}
