//! `loop.sendfile` through TCP transports and `loop.sock_sendfile` on plain sockets, on
//! 127.0.0.1 with temp files; a reader thread collects what arrives.

mod net_support;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;
use std::thread::JoinHandle;
use std::time::Duration;

use loopd::{ConnectOptions, Error, EventLoop, Protocol, Transport};
use net_support::{run, run_for, sleep};
use socket2::{Domain, Socket, Type};

struct Quiet;
impl Protocol for Quiet {}

/// A temp file holding `len` patterned bytes.
fn temp_file(len: usize) -> (File, Vec<u8>) {
    // A block of a prime length repeated: cheap to make, and misplaced bytes show.
    let block: Vec<u8> = (0..65_521usize).map(|i| (i * 7 + i / 251) as u8).collect();
    let data: Vec<u8> = block.iter().copied().cycle().take(len).collect();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&data).unwrap();
    file.rewind().unwrap();
    (file, data)
}

/// A listener and a thread that accepts one connection and reads it to its end, after
/// waiting `delay` (so the sender's socket buffer fills first).
fn reader(delay: Duration) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        std::thread::sleep(delay);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    (addr, thread)
}

fn connect(lp: &EventLoop, addr: SocketAddr) -> Transport {
    let connect = lp.create_connection(
        || Quiet,
        "127.0.0.1",
        addr.port(),
        ConnectOptions::default(),
    );
    run(lp, connect).unwrap().0
}

#[test]
fn the_kernel_sends_the_file_between_writes_and_moves_its_position() {
    let (file, data) = temp_file(3 * 1024 * 1024 + 17);
    let (addr, thread) = reader(Duration::ZERO);
    let lp = EventLoop::new().unwrap();
    let t = connect(&lp, addr);
    t.write(b"head").unwrap();
    let sent = run(&lp, lp.sendfile(&t, &file, 100, None, false)).unwrap();
    assert_eq!(sent, data.len() as u64 - 100);
    assert_eq!((&file).stream_position().unwrap(), data.len() as u64);
    t.write(b"tail").unwrap();
    t.close();
    run_for(&lp, Duration::from_millis(5));
    let got = thread.join().unwrap();
    assert_eq!(got.len(), 4 + data.len() - 100 + 4);
    assert_eq!(&got[..4], b"head");
    assert!(
        got[4..got.len() - 4] == data[100..],
        "the file's bytes, in order"
    );
    assert_eq!(&got[got.len() - 4..], b"tail");
    lp.close().unwrap();
}

#[test]
fn writes_fail_while_the_kernel_sends_and_work_again_after() {
    let (file, data) = temp_file(16 * 1024 * 1024);
    let (addr, thread) = reader(Duration::from_millis(300));
    let lp = EventLoop::new().unwrap();
    let t = connect(&lp, addr);
    let (inner, t2) = (lp.clone(), t.clone());
    let during = run(&lp, async move {
        let sending = inner
            .create_task(
                inner.sendfile(&t2, &file, 0, Some(data.len() as u64), true),
                None,
            )
            .unwrap();
        sleep(&inner, Duration::from_millis(50)).await;
        let during = t2.write(b"x");
        assert!(!t2.is_reading(), "reading is paused meanwhile");
        let sent = sending.take().await.unwrap().unwrap();
        assert_eq!(sent, data.len() as u64);
        assert!(t2.is_reading(), "and resumed after");
        t2.write(b"!").unwrap();
        t2.close();
        during
    });
    assert!(
        matches!(during, Err(Error::SendfileInProgress)),
        "{during:?}"
    );
    assert_eq!(
        Error::SendfileInProgress.to_string(),
        "unable to write; sendfile is in progress"
    );
    run_for(&lp, Duration::from_millis(5));
    let got = thread.join().unwrap();
    assert_eq!(got.len(), 16 * 1024 * 1024 + 1);
    assert_eq!(got.last(), Some(&b'!'));
    lp.close().unwrap();
}

/// A pipe's read end as a `File`, fed `data` by a thread that then closes it.
fn fed_pipe(data: Vec<u8>) -> File {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors, each then owned by one File.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, mut write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    std::thread::spawn(move || write.write_all(&data).unwrap());
    read
}

#[test]
fn a_pipe_needs_the_fallback_and_the_fallback_sends_it() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let lp = EventLoop::new().unwrap();
    let (addr, thread) = reader(Duration::ZERO);
    let t = connect(&lp, addr);
    let pipe = fed_pipe(payload.clone());
    let err = run(&lp, lp.sendfile(&t, &pipe, 0, None, false)).unwrap_err();
    assert!(matches!(err, Error::SendfileNotAvailable(_)));
    assert_eq!(
        err.to_string(),
        "sendfile is not available: not a regular file"
    );
    let sent = run(&lp, lp.sendfile(&t, &pipe, 0, None, true)).unwrap();
    assert_eq!(sent, payload.len() as u64);
    t.close();
    run_for(&lp, Duration::from_millis(5));
    assert!(thread.join().unwrap() == payload);
    lp.close().unwrap();
}

#[test]
fn bad_counts_and_closing_transports_are_errors() {
    let (file, data) = temp_file(1000);
    let (addr, thread) = reader(Duration::ZERO);
    let lp = EventLoop::new().unwrap();
    let t = connect(&lp, addr);
    let err = run(&lp, lp.sendfile(&t, &file, 0, Some(0), true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid count: 0: must be a positive integer"
    );
    // More than the file holds: what there is.
    let sent = run(&lp, lp.sendfile(&t, &file, 900, Some(5000), false)).unwrap();
    assert_eq!(sent, 100);
    t.close();
    let err = run(&lp, lp.sendfile(&t, &file, 0, None, true)).unwrap_err();
    assert!(matches!(err, Error::TransportClosing), "{err}");
    run_for(&lp, Duration::from_millis(5));
    assert!(thread.join().unwrap() == data[900..]);
    lp.close().unwrap();
}

#[test]
fn sock_sendfile_sends_through_a_plain_socket() {
    let (file, data) = temp_file(2 * 1024 * 1024);
    let (addr, thread) = reader(Duration::from_millis(100));
    let lp = EventLoop::new().unwrap();
    let inner = lp.clone();
    let sent = run(&lp, async move {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_nonblocking(true).unwrap();
        inner.sock_connect(&sock, &addr.into()).await.unwrap();
        let sent = inner
            .sock_sendfile(&sock, &file, 10, None, false)
            .await
            .unwrap();
        assert_eq!((&file).stream_position().unwrap(), data.len() as u64);
        let pipe = fed_pipe(b"and a pipe".to_vec());
        let piped = inner
            .sock_sendfile(&sock, &pipe, 0, None, true)
            .await
            .unwrap();
        assert_eq!(piped, 10);
        sent
    });
    assert_eq!(sent, 2 * 1024 * 1024 - 10);
    let got = thread.join().unwrap();
    assert_eq!(got.len(), 2 * 1024 * 1024 - 10 + 10);
    assert!(got.ends_with(b"and a pipe"));
    lp.close().unwrap();
}
