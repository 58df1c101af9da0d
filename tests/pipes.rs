//! `connect_read_pipe` and `connect_write_pipe` on anonymous pipes and a FIFO.

mod net_support;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::Duration;

use loopd::{
    Error, EventLoop, ExtraInfo, ReadPipeProtocol, ReadPipeTransport, WritePipeProtocol,
    WritePipeTransport,
};
use net_support::{run, run_for, run_until, sleep, until};

#[derive(Default)]
struct Seen {
    data: Vec<u8>,
    events: Vec<String>,
}

type Shared = Rc<RefCell<Seen>>;

struct Reader(Shared);

impl ReadPipeProtocol for Reader {
    fn connection_made(&mut self, _: ReadPipeTransport) {
        self.0.borrow_mut().events.push("made".into());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn eof_received(&mut self) {
        self.0.borrow_mut().events.push("eof".into());
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let event = error.map_or("lost".to_string(), |e| format!("lost: {:?}", e.kind()));
        self.0.borrow_mut().events.push(event);
    }
}

struct Writer(Shared);

impl WritePipeProtocol for Writer {
    fn connection_made(&mut self, _: WritePipeTransport) {
        self.0.borrow_mut().events.push("made".into());
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let event = error.map_or("lost".to_string(), |e| format!("lost: {:?}", e.kind()));
        self.0.borrow_mut().events.push(event);
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().events.push("pause".into());
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().events.push("resume".into());
    }
}

/// A new pipe: (read end, write end).
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors, each then owned by one File.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

fn events(seen: &Shared) -> Vec<String> {
    seen.borrow().events.clone()
}

fn read_pipe(lp: &EventLoop, end: File) -> (ReadPipeTransport, Shared) {
    let seen = Shared::default();
    let made = seen.clone();
    let (t, _) = run(lp, lp.connect_read_pipe(move || Reader(made), end)).unwrap();
    assert_eq!(events(&seen), ["made"]);
    (t, seen)
}

fn write_pipe(lp: &EventLoop, end: File) -> (WritePipeTransport, Shared) {
    let seen = Shared::default();
    let made = seen.clone();
    let (t, _) = run(lp, lp.connect_write_pipe(move || Writer(made), end)).unwrap();
    assert_eq!(events(&seen), ["made"]);
    (t, seen)
}

#[test]
fn a_read_pipe_delivers_data_then_eof_then_lost() {
    let lp = EventLoop::new().unwrap();
    let (read, mut write) = pipe();
    let (t, seen) = read_pipe(&lp, read);
    assert!(matches!(t.get_extra_info("pipe"), Some(ExtraInfo::Pipe(_))));
    write.write_all(b"through the pipe").unwrap();
    drop(write);
    let waiting = seen.clone();
    run_until(&lp, move || waiting.borrow().events.len() == 3);
    assert_eq!(seen.borrow().data, b"through the pipe");
    assert_eq!(events(&seen), ["made", "eof", "lost"]);
    assert!(t.is_closing());
    assert!(
        t.get_extra_info("pipe").is_none(),
        "closed after connection_lost"
    );
    lp.close().unwrap();
}

#[test]
fn a_paused_read_pipe_holds_data_until_resumed() {
    let lp = EventLoop::new().unwrap();
    let (read, mut write) = pipe();
    let (t, seen) = read_pipe(&lp, read);
    t.pause_reading();
    assert!(!t.is_reading());
    write.write_all(b"held").unwrap();
    run_for(&lp, Duration::from_millis(20));
    assert!(seen.borrow().data.is_empty());
    t.resume_reading();
    let waiting = seen.clone();
    run_until(&lp, move || waiting.borrow().data == b"held");
    t.close();
    let waiting = seen.clone();
    run_until(&lp, move || waiting.borrow().events.len() == 2);
    assert_eq!(events(&seen), ["made", "lost"]);
    lp.close().unwrap();
}

#[test]
fn a_write_pipe_pauses_when_full_resumes_when_drained_and_flushes_on_close() {
    let lp = EventLoop::new().unwrap();
    let (mut read, write) = pipe();
    let (t, seen) = write_pipe(&lp, write);
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 249) as u8).collect();
    t.write(&data).unwrap();
    assert_eq!(
        events(&seen),
        ["made", "pause"],
        "a pipe holds far less than 1 MiB"
    );
    assert!(t.get_write_buffer_size() > 0);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        read.read_to_end(&mut all).unwrap();
        all
    });
    let (inner, t2, waiting) = (lp.clone(), t.clone(), seen.clone());
    run(&lp, async move {
        until(&inner, || waiting.borrow().events.len() == 3).await;
        t2.write(b"end").unwrap();
        t2.close();
        assert!(matches!(t2.write(b"late"), Err(Error::TransportClosing)));
        until(&inner, || waiting.borrow().events.len() == 4).await;
    });
    assert_eq!(events(&seen), ["made", "pause", "resume", "lost"]);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len() + 3);
    assert!(got[..data.len()] == data[..] && got.ends_with(b"end"));
    lp.close().unwrap();
}

#[test]
fn the_reader_going_away_closes_the_write_pipe() {
    let lp = EventLoop::new().unwrap();
    // Nothing buffered: a clean close.
    let (read, write) = pipe();
    let (_t, seen) = write_pipe(&lp, write);
    drop(read);
    let waiting = seen.clone();
    run_until(&lp, move || waiting.borrow().events.len() == 2);
    assert_eq!(events(&seen), ["made", "lost"]);
    // Data still buffered: BrokenPipe.
    let (read, write) = pipe();
    let (t, seen) = write_pipe(&lp, write);
    t.write(&vec![7; 256 * 1024]).unwrap();
    assert!(t.get_write_buffer_size() > 0);
    drop(read);
    let waiting = seen.clone();
    run_until(&lp, move || waiting.borrow().events.len() == 3);
    assert_eq!(events(&seen), ["made", "pause", "lost: BrokenPipe"]);
    lp.close().unwrap();
}

#[test]
fn a_fifo_carries_data_between_its_two_transports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let read_end = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let write_end = OpenOptions::new().write(true).open(&path).unwrap();
    let lp = EventLoop::new().unwrap();
    let (_r, read_seen) = read_pipe(&lp, read_end);
    let (w, _) = write_pipe(&lp, write_end);
    w.write(b"via fifo").unwrap();
    w.close();
    let waiting = read_seen.clone();
    run_until(&lp, move || waiting.borrow().events.len() == 3);
    assert_eq!(read_seen.borrow().data, b"via fifo");
    assert_eq!(events(&read_seen), ["made", "eof", "lost"]);
    lp.close().unwrap();
}

#[test]
fn regular_files_are_refused_and_closing_the_loop_releases_pipes() {
    let lp = EventLoop::new().unwrap();
    let file = tempfile::tempfile().unwrap();
    let err = run(
        &lp,
        lp.connect_read_pipe(|| Reader(Shared::default()), file),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { what: "pipe", .. }));
    assert!(
        err.to_string()
            .ends_with("pipe transport is for pipes/sockets only"),
        "{err}"
    );

    let (mut read, write) = pipe();
    let (t, seen) = write_pipe(&lp, write);
    let inner = lp.clone();
    run(
        &lp,
        async move { sleep(&inner, Duration::from_millis(1)).await },
    );
    lp.close().unwrap();
    assert!(t.is_closing());
    assert_eq!(
        events(&seen),
        ["made"],
        "no protocol calls on a closed loop"
    );
    let mut rest = Vec::new();
    assert_eq!(
        read.read_to_end(&mut rest).unwrap(),
        0,
        "the write end was closed"
    );
}
