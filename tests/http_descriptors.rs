//! Running out of file descriptors: the server backs off, says so once, and serves again once
//! descriptors are free. (Its own test binary: it lowers the process's open-file limit.)

mod front_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use front_support::{client, Front};
use ipns_registry::http::ServeOptions;
use ipns_registry::registry::RegistryOptions;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

const STARVED: &str = "cannot accept connections";
const RECOVERED: &str = "accepting connections again";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_backs_off_logs_once_and_recovers() {
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit reads the struct we pass, which lives for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let log = Log::default();
    let sink = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_env_filter("ipns_registry=info")
        .init();
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    assert_eq!(
        http.get(front.url("/v2/"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );

    // Take every descriptor but one, and spend that one on a connection: the server cannot
    // accept it. (Descriptors freed meanwhile, by the connection above closing, say, let an
    // accept through: then take them again.)
    let mut hogs = Vec::new();
    let mut waiting = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.count(STARVED) == 0 {
        assert!(Instant::now() < deadline, "accept never failed");
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hogs.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("opening /dev/null: {e}"),
            }
        }
        hogs.pop();
        if let Ok(conn) = std::net::TcpStream::connect(front.addr()) {
            waiting.push(conn);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Several failed accepts (the back-off doubles from 10 ms), one warning.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(log.count(STARVED), 1);
    assert_eq!(log.count("Too many open files"), 1);

    drop(hogs);
    drop(waiting);
    assert_eq!(
        http.get(front.url("/v2/"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    // Once accepts have gone well for a while, the shortage is reported over, once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        http.get(front.url("/v2/"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    assert_eq!(log.count(RECOVERED), 1, "{}", log.count(STARVED));
    assert_eq!(log.count(STARVED), 1);
}
