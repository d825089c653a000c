//! The real binary started as systemd starts a `Type=notify` unit: a `NOTIFY_SOCKET` datagram
//! socket and `WATCHDOG_USEC`. It must say `READY=1` only once HTTP answers, feed the watchdog
//! again and again while it runs, and say `STOPPING=1` on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One notification datagram, split into its `KEY=value` lines.
fn receive(socket: &UnixDatagram, deadline: Instant) -> Option<Vec<String>> {
    let left = deadline.checked_duration_since(Instant::now())?;
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .expect("set timeout");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    let text = String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8");
    Some(text.lines().map(str::to_owned).collect())
}

/// `GET /v2/` over plain HTTP/1.0; returns the status line.
fn get_v2(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn ready_after_http_answers_then_watchdog_pings_then_stopping() {
    let node = common::TestNode::init("writer");
    let sockets = tempfile::tempdir().expect("temp dir");
    let path = sockets.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");

    // WatchdogSec=0.9s: the node checks itself and pings every 300 ms.
    let mut child = Command::new(common::binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "900000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ipns-registry");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before_ready = Vec::new();
    let ready = loop {
        let message = receive(&socket, deadline).expect("READY=1 within 60 s");
        if message.iter().any(|l| l == "READY=1") {
            break message;
        }
        before_ready.push(message);
    };
    // The ready message names the bound address; HTTP must answer on it right away.
    let status = ready
        .iter()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a STATUS line with READY=1");
    let addr = status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .expect("the HTTP address in the status line")
        .to_owned();
    assert!(
        status.contains(" as k51"),
        "status names the IPNS name: {status}"
    );
    let answer = get_v2(&addr);
    assert!(
        answer.contains(" 200 "),
        "GET /v2/ right after READY=1: {answer}"
    );
    assert!(
        before_ready.iter().flatten().all(|l| l != "WATCHDOG=1"),
        "no watchdog ping before READY=1: {before_ready:?}"
    );

    // Pings keep coming, each with a status line that counts peers.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pings < 4 {
        let message = receive(&socket, deadline).expect("watchdog pings keep coming");
        if message.iter().any(|l| l == "WATCHDOG=1") {
            pings += 1;
            assert!(
                message
                    .iter()
                    .any(|l| l.starts_with("STATUS=serving http://") && l.contains("peers")),
                "ping carries a status line: {message:?}"
            );
        }
    }
    assert!(get_v2(&addr).contains(" 200 "), "still serving");

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "send SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = receive(&socket, deadline).expect("STOPPING=1 after SIGTERM");
        if message.iter().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let exit = child.wait().expect("wait for the node");
    assert!(exit.success(), "node exits cleanly after SIGTERM: {exit:?}");
}
