//! Lossless byte streams: the bytes that a transport or a child's pipe produces on a loop
//! thread, read by gRPC clients with credit-based flow control.
//!
//! A [`ByteStream`] has one producer (a protocol callback on the loop thread) and any number
//! of [`StreamReader`]s (gRPC streams on tokio). The producer never waits: [`ByteStream::push`]
//! appends and answers whether it may keep reading. When it answers `false` the producer
//! pauses its socket or pipe (the peer then sees TCP backpressure, or the child blocks in
//! `write`); once the readers have taken enough, the stream calls the resume callback from
//! the reader's thread, and the producer posts `resume_reading` to its loop.
//!
//! # Invariants
//! - Offsets count bytes since the stream began. A chunk's offset is its first byte's offset,
//!   so a reader can resume exactly where it stopped.
//! - The *frontier* is the lowest offset an open reader has not taken yet; with no reader
//!   open, the highest frontier there ever was. At most `window` bytes lie beyond it before
//!   the producer is told to pause, and it is resumed once fewer than `window / 2` do.
//! - Bytes below the frontier are dropped, except the newest `retain` of them (kept for late
//!   readers, e.g. a process's retained output). A reader open at an offset is never
//!   overtaken: nothing it has not taken is dropped while it is open.
//! - With `pause_without_reader = false` and no reader open, the producer is never paused
//!   and only the newest `retain` bytes are kept (lossy history for readers that come late).
//! - Small pushes are coalesced into one buffer, so a chatty producer does not make one
//!   chunk per line; readers get `Bytes` slices of it, with no copy.
//! - Every lock is short and never held across an await or a callback.

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Pushes smaller than this are coalesced into the stream's open buffer.
const COALESCE_BELOW: usize = 16 * 1024;
/// The open buffer becomes a chunk of its own once it holds this much.
const TAIL_CHUNK: usize = 64 * 1024;

/// How a stream holds its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Bytes allowed beyond the frontier before the producer must pause (at least 1).
    pub window: usize,
    /// Bytes already taken (or, with no reader, the newest bytes) kept for late readers.
    pub retain: usize,
    /// Whether the producer pauses when no reader is open (transports: lossless from the
    /// first byte) or keeps going and drops the oldest beyond `retain` (process output).
    pub pause_without_reader: bool,
}

/// Why a reader could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The offset asked for was dropped already.
    #[error("offset {from} is no longer held: the oldest byte held is at offset {oldest}")]
    Expired {
        /// The offset asked for.
        from: u64,
        /// The oldest offset still held.
        oldest: u64,
    },
    /// The offset asked for was never written.
    #[error("offset {from} is beyond the end of the stream at offset {end}")]
    Beyond {
        /// The offset asked for.
        from: u64,
        /// The offset the next byte will get.
        end: u64,
    },
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// End of file: the peer or the child closed its side.
    Eof,
    /// The producer failed (e.g. connection_lost with an error); the message says why.
    Error(String),
}

/// One piece of a stream, as [`StreamReader::next`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of `data[0]` in the stream.
    pub offset: u64,
    /// The bytes; empty only in the last chunk, which carries `end`.
    pub data: Bytes,
    /// Set on the last chunk: the stream ended after `data`.
    pub end: Option<StreamEnd>,
}

type Resume = Arc<dyn Fn() + Send + Sync>;

struct State {
    config: StreamConfig,
    /// Sealed chunks, oldest first, from `base`.
    chunks: VecDeque<Bytes>,
    /// Coalesced small pushes that follow `chunks`.
    tail: BytesMut,
    /// Offset of the first byte held.
    base: u64,
    /// Offset the next pushed byte gets.
    end: u64,
    /// Open readers: id -> the offset of the next byte each will take.
    readers: BTreeMap<u64, u64>,
    next_reader_id: u64,
    /// The highest frontier there was (see the module invariants).
    frontier_mark: u64,
    ended: Option<StreamEnd>,
    paused: bool,
    resume: Option<Resume>,
    /// Readers waiting for bytes, so a push wakes only when someone waits.
    waiting: usize,
}

struct Shared {
    state: Mutex<State>,
    readable: Notify,
}

/// A lossless byte stream; cloning shares it.
#[derive(Clone)]
pub struct ByteStream {
    shared: Arc<Shared>,
}

/// What a reader gets after the producer has pushed: bytes, the end, or nothing yet.
enum Take {
    Chunk(Chunk, Option<Resume>),
    Done,
    Wait,
}

impl State {
    fn frontier(&self) -> u64 {
        self.readers
            .values()
            .copied()
            .min()
            .unwrap_or(self.frontier_mark)
    }

    fn held(&self) -> u64 {
        self.end - self.base
    }

    /// Whether the producer must stop reading now.
    fn over_window(&self) -> bool {
        if self.readers.is_empty() && !self.config.pause_without_reader {
            return false;
        }
        self.end - self.frontier() >= self.config.window as u64
    }

    /// Moves the open buffer into the sealed chunks.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunks.push_back(sealed);
        }
    }

    /// Drops what no reader needs and `retain` does not keep.
    fn trim(&mut self) {
        let keep_newest = self.end.saturating_sub(self.config.retain as u64);
        let keep_from = if self.readers.is_empty() && !self.config.pause_without_reader {
            keep_newest
        } else {
            keep_newest.min(self.frontier())
        };
        while self.base < keep_from {
            let Some(front) = self.chunks.front_mut() else {
                // Only the open buffer is left: seal it to drop from it.
                if self.tail.is_empty() {
                    break;
                }
                self.seal_tail();
                continue;
            };
            let drop = (keep_from - self.base).min(front.len() as u64) as usize;
            if drop == front.len() {
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(drop);
            }
            self.base += drop as u64;
        }
    }

    /// Up to `max` bytes from `offset` (which must lie in `base..end`), as one slice.
    fn slice_at(&mut self, offset: u64, max: usize) -> Bytes {
        let mut start = offset - self.base;
        for chunk in &self.chunks {
            if start < chunk.len() as u64 {
                let from = start as usize;
                let to = chunk.len().min(from + max);
                return chunk.slice(from..to);
            }
            start -= chunk.len() as u64;
        }
        // In the open buffer: seal it so the reader shares it without a copy.
        self.seal_tail();
        match self.chunks.back() {
            Some(last) => {
                let from = (offset - (self.end - last.len() as u64)) as usize;
                let to = last.len().min(from + max);
                last.slice(from..to)
            }
            None => Bytes::new(),
        }
    }

    /// After readers moved: the frontier mark, trimming and whether to resume the producer.
    fn after_reader_moved(&mut self) -> Option<Resume> {
        if let Some(&lowest) = self.readers.values().min() {
            self.frontier_mark = self.frontier_mark.max(lowest);
        }
        self.trim();
        let low_water = (self.config.window / 2).max(1) as u64;
        let room = self.readers.is_empty() && !self.config.pause_without_reader
            || self.end - self.frontier() < low_water;
        if self.paused && room && self.ended.is_none() {
            self.paused = false;
            return self.resume.clone();
        }
        None
    }

    fn take(&mut self, reader: u64, max: usize) -> Take {
        let Some(&offset) = self.readers.get(&reader) else {
            return Take::Done;
        };
        if offset < self.end {
            let data = self.slice_at(offset, max.max(1));
            self.readers.insert(reader, offset + data.len() as u64);
            let resume = self.after_reader_moved();
            return Take::Chunk(
                Chunk {
                    offset,
                    data,
                    end: None,
                },
                resume,
            );
        }
        match self.ended.clone() {
            Some(end) => {
                self.readers.remove(&reader);
                self.after_reader_moved();
                Take::Chunk(
                    Chunk {
                        offset,
                        data: Bytes::new(),
                        end: Some(end),
                    },
                    None,
                )
            }
            None => Take::Wait,
        }
    }
}

impl ByteStream {
    /// An empty stream. A `window` of 0 is taken as 1.
    pub fn new(config: StreamConfig) -> Self {
        let config = StreamConfig {
            window: config.window.max(1),
            ..config
        };
        ByteStream {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config,
                    chunks: VecDeque::new(),
                    tail: BytesMut::new(),
                    base: 0,
                    end: 0,
                    readers: BTreeMap::new(),
                    next_reader_id: 1,
                    frontier_mark: 0,
                    ended: None,
                    paused: false,
                    resume: None,
                    waiting: 0,
                }),
                readable: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent state (no multi-step updates
        // across user code), so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends bytes (producer side). Returns whether the producer may keep reading:
    /// `false` means pause now; the resume callback says when to read again.
    /// Bytes pushed after [`ByteStream::finish`] are ignored.
    pub fn push(&self, data: &[u8]) -> bool {
        let (keep_reading, wake) = {
            let mut state = self.lock();
            if state.ended.is_some() {
                return false;
            }
            if !data.is_empty() {
                if data.len() < COALESCE_BELOW {
                    state.tail.extend_from_slice(data);
                    if state.tail.len() >= TAIL_CHUNK {
                        state.seal_tail();
                    }
                } else {
                    state.seal_tail();
                    state.chunks.push_back(Bytes::copy_from_slice(data));
                }
                state.end += data.len() as u64;
                state.trim();
            }
            if state.over_window() {
                state.paused = true;
            }
            (!state.paused, state.waiting > 0)
        };
        if wake {
            self.shared.readable.notify_waiters();
        }
        keep_reading
    }

    /// Ends the stream (producer side): readers get the held bytes, then the end.
    /// Only the first call counts.
    pub fn finish(&self, end: StreamEnd) {
        {
            let mut state = self.lock();
            if state.ended.is_some() {
                return;
            }
            state.ended = Some(end);
            state.paused = false;
        }
        self.shared.readable.notify_waiters();
    }

    /// Sets what to call (on a reader's thread, with no lock held) when a paused producer
    /// may read again.
    pub fn set_resume(&self, resume: impl Fn() + Send + Sync + 'static) {
        self.lock().resume = Some(Arc::new(resume));
    }

    /// Whether the producer is paused by this stream.
    #[cfg(test)]
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Bytes pushed so far: the offset the next byte will get.
    pub fn written(&self) -> u64 {
        self.lock().end
    }

    /// Bytes held now (undelivered plus retained).
    pub fn held(&self) -> u64 {
        self.lock().held()
    }

    /// Opens a reader at `from`, or at the oldest byte held when `None`.
    ///
    /// Fails with [`StreamError::Expired`] when `from` was dropped already and with
    /// [`StreamError::Beyond`] when it was never written.
    pub fn open(&self, from: Option<u64>) -> Result<StreamReader, StreamError> {
        let mut state = self.lock();
        let from = from.unwrap_or(state.base);
        if from < state.base {
            return Err(StreamError::Expired {
                from,
                oldest: state.base,
            });
        }
        if from > state.end {
            return Err(StreamError::Beyond {
                from,
                end: state.end,
            });
        }
        let id = state.next_reader_id;
        state.next_reader_id += 1;
        state.readers.insert(id, from);
        drop(state);
        Ok(StreamReader {
            stream: self.clone(),
            id,
        })
    }
}

/// One reader of a [`ByteStream`]; dropping it releases what it held back.
pub struct StreamReader {
    stream: ByteStream,
    id: u64,
}

impl StreamReader {
    /// The next chunk of at most `max` bytes, waiting until there is one; the last chunk
    /// carries the end, and `None` follows it.
    pub async fn next(&mut self, max: usize) -> Option<Chunk> {
        loop {
            let mut notified = pin!(self.stream.shared.readable.notified());
            notified.as_mut().enable();
            let taken = {
                let mut state = self.stream.lock();
                let taken = state.take(self.id, max);
                if matches!(taken, Take::Wait) {
                    state.waiting += 1;
                }
                taken
            };
            match taken {
                Take::Chunk(chunk, resume) => {
                    if let Some(resume) = resume {
                        resume();
                    }
                    return Some(chunk);
                }
                Take::Done => return None,
                Take::Wait => {
                    // Counted down even when the caller drops this future mid-wait.
                    let _waiting = WaitingGuard(&self.stream);
                    notified.await;
                }
            }
        }
    }
}

/// Counts a reader out of `State::waiting` when its wait ends, however it ends.
struct WaitingGuard<'a>(&'a ByteStream);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let resume = {
            let mut state = self.stream.lock();
            if state.readers.remove(&self.id).is_none() {
                return;
            }
            state.after_reader_moved()
        };
        if let Some(resume) = resume {
            resume();
        }
    }
}

/// The largest chunk one gRPC message carries.
pub const MAX_CHUNK: usize = 256 * 1024;

/// What a credit-based read needs besides the reader: the credits as the client sends
/// them, and the daemon's shutdown signal.
pub struct CreditedRead<C> {
    /// The reader, opened at the client's offset.
    pub reader: StreamReader,
    /// Credits in bytes, in the order the client sent them; the client may end this
    /// stream (half-close) and still receive what it granted before.
    pub credits: C,
    /// Becomes `true` when the daemon shuts down: the stream then ends with UNAVAILABLE.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

struct ReadState<C> {
    read: CreditedRead<C>,
    credit: u64,
    credits_open: bool,
}

/// Serves a reader as a gRPC response stream of `ByteChunk`s, never sending more bytes
/// than the client has granted. Lazy like the event stream: a chunk is taken from the
/// stream only when tonic asks for the next message, so an unread stream holds the
/// producer back instead of piling up in memory.
///
/// The response ends after the chunk that carries the end (EOF or the error), when the
/// client ends its credits with none left, or with UNAVAILABLE at shutdown; a credit
/// stream that fails ends the response with that error.
pub fn serve_credited<C>(
    read: CreditedRead<C>,
) -> impl futures_util::Stream<Item = Result<loopd_proto::pb::ByteChunk, tonic::Status>> + Send
where
    C: futures_util::Stream<Item = Result<u64, tonic::Status>> + Send + Unpin + 'static,
{
    let state = ReadState {
        read,
        credit: 0,
        credits_open: true,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match next_credited(&mut state).await {
            Ok(Some(chunk)) => {
                let last = chunk.eof;
                Some((Ok(chunk), (!last).then_some(state)))
            }
            Ok(None) => None,
            Err(status) => Some((Err(status), None)),
        }
    })
}

/// The next chunk to send, waiting for credit, bytes or shutdown.
async fn next_credited<C>(
    state: &mut ReadState<C>,
) -> Result<Option<loopd_proto::pb::ByteChunk>, tonic::Status>
where
    C: futures_util::Stream<Item = Result<u64, tonic::Status>> + Send + Unpin,
{
    use futures_util::StreamExt;
    loop {
        if state.credit == 0 && !state.credits_open {
            return Ok(None);
        }
        let want = state.credit.min(MAX_CHUNK as u64) as usize;
        let ReadState {
            read,
            credit,
            credits_open,
        } = state;
        tokio::select! {
            biased;
            () = async { let _ = read.shutdown.wait_for(|down| *down).await; } => {
                return Err(crate::status::Error::ShuttingDown.into());
            }
            more = read.credits.next(), if *credits_open => match more {
                Some(Ok(bytes)) => *credit = credit.saturating_add(bytes),
                Some(Err(status)) => return Err(status),
                None => *credits_open = false,
            },
            chunk = read.reader.next(want), if want > 0 => {
                let Some(chunk) = chunk else { return Ok(None) };
                *credit -= chunk.data.len() as u64;
                let (eof, error) = match chunk.end {
                    None => (false, String::new()),
                    Some(StreamEnd::Eof) => (true, String::new()),
                    Some(StreamEnd::Error(message)) => (true, message),
                };
                return Ok(Some(loopd_proto::pb::ByteChunk {
                    offset: chunk.offset,
                    data: chunk.data,
                    eof,
                    error,
                }));
            }
        }
    }
}

/// The response of a read RPC (ReadTransport, ReadOutput, ReadFifo).
pub type ChunkStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<loopd_proto::pb::ByteChunk, tonic::Status>> + Send>,
>;

/// Serves `reader` to a read RPC of the common shape: the first message (already read,
/// having opened `reader`) granted `first_credit`, and each later message grants what
/// `credit_of` finds in it (or fails the stream with its error).
pub fn serve_read_rpc<T: Send + 'static>(
    reader: StreamReader,
    first_credit: u64,
    later: tonic::Streaming<T>,
    credit_of: fn(T) -> Result<u64, tonic::Status>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> ChunkStream {
    use futures_util::StreamExt;
    let later = later.map(move |message| credit_of(message.map_err(crate::status::inbound)?));
    let credits = futures_util::stream::once(async move { Ok(first_credit) }).chain(later);
    Box::pin(serve_credited(CreditedRead {
        reader,
        credits: Box::pin(credits),
        shutdown,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn config(window: usize, retain: usize, pause_without_reader: bool) -> StreamConfig {
        StreamConfig {
            window,
            retain,
            pause_without_reader,
        }
    }

    fn counting_resume(stream: &ByteStream) -> Arc<AtomicUsize> {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        stream.set_resume(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        calls
    }

    async fn read_all(reader: &mut StreamReader, max: usize) -> (Vec<u8>, Option<StreamEnd>) {
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next(max).await {
            assert_eq!(chunk.offset, bytes.len() as u64, "chunks are contiguous");
            bytes.extend_from_slice(&chunk.data);
            if chunk.end.is_some() {
                return (bytes, chunk.end);
            }
        }
        (bytes, None)
    }

    type CreditSender = tokio::sync::mpsc::UnboundedSender<Result<u64, tonic::Status>>;
    type ChunkResult = Result<loopd_proto::pb::ByteChunk, tonic::Status>;

    fn credited(
        reader: StreamReader,
        credits: Vec<u64>,
    ) -> (
        impl futures_util::Stream<Item = ChunkResult>,
        CreditSender,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (credit_tx, credit_rx) = tokio::sync::mpsc::unbounded_channel();
        for credit in credits {
            credit_tx.send(Ok(credit)).expect("receiver is alive");
        }
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let stream = serve_credited(CreditedRead {
            reader,
            credits: tokio_stream::wrappers::UnboundedReceiverStream::new(credit_rx),
            shutdown,
        });
        (Box::pin(stream), credit_tx, shutdown_tx)
    }

    #[tokio::test]
    async fn a_credited_read_never_sends_more_than_the_credit() {
        use futures_util::StreamExt;
        let stream = ByteStream::new(config(1 << 20, 0, true));
        stream.push(&[5; 3000]);
        let reader = stream.open(None).expect("open");
        let (mut chunks, credit_tx, _shutdown) = credited(reader, vec![1000, 500]);
        let mut got = 0;
        while got < 1500 {
            let chunk = chunks.next().await.expect("chunk").expect("ok");
            assert_eq!(chunk.offset, got);
            got += chunk.data.len() as u64;
        }
        assert_eq!(got, 1500, "exactly the credit granted");
        let pending = tokio::time::timeout(Duration::from_millis(50), chunks.next()).await;
        assert!(pending.is_err(), "no credit left: nothing more is sent");
        stream.finish(StreamEnd::Error("reset by peer".into()));
        credit_tx.send(Ok(10_000)).expect("open");
        drop(credit_tx);
        let rest = chunks.next().await.expect("chunk").expect("ok");
        assert_eq!(
            (rest.offset, rest.data.len(), rest.eof),
            (1500, 1500, false)
        );
        let last = chunks.next().await.expect("end chunk").expect("ok");
        assert!(last.eof);
        assert_eq!(last.error, "reset by peer");
        assert!(chunks.next().await.is_none());
    }

    #[tokio::test]
    async fn a_credited_read_ends_with_its_credits_or_at_shutdown() {
        use futures_util::StreamExt;
        let stream = ByteStream::new(config(1 << 20, 0, true));
        let (mut chunks, credit_tx, _shutdown) = credited(stream.open(None).expect("open"), vec![]);
        drop(credit_tx);
        assert!(
            chunks.next().await.is_none(),
            "no credit and no more to come"
        );

        let (mut chunks, _credit_tx, shutdown_tx) =
            credited(stream.open(None).expect("open"), vec![100]);
        shutdown_tx.send(true).expect("receiver alive");
        let status = chunks.next().await.expect("item").expect_err("shutdown");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_then_the_end() {
        let stream = ByteStream::new(config(1 << 20, 0, true));
        let mut reader = stream.open(None).expect("open at start");
        let expected: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for piece in expected.chunks(777) {
            assert!(stream.push(piece));
        }
        stream.push(&vec![7u8; 40_000]);
        stream.finish(StreamEnd::Error("connection reset".into()));
        let (bytes, end) = read_all(&mut reader, 10_000).await;
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        assert_eq!(bytes.len(), expected.len() + 40_000);
        assert_eq!(end, Some(StreamEnd::Error("connection reset".into())));
        assert!(reader.next(10).await.is_none());
    }

    #[tokio::test]
    async fn a_full_window_pauses_and_reading_resumes() {
        let stream = ByteStream::new(config(1000, 0, true));
        let resumed = counting_resume(&stream);
        assert!(stream.push(&[1; 600]));
        assert!(
            !stream.push(&[2; 600]),
            "1200 bytes unread pass the 1000-byte window"
        );
        assert!(stream.is_paused());
        let mut reader = stream.open(None).expect("open");
        let first = reader.next(500).await.expect("chunk");
        assert_eq!((first.offset, first.data.len()), (0, 500));
        assert_eq!(
            resumed.load(Ordering::SeqCst),
            0,
            "700 unread is above the low water"
        );
        let second = reader.next(500).await.expect("chunk");
        assert_eq!(second.offset, 500);
        assert_eq!(
            resumed.load(Ordering::SeqCst),
            1,
            "under 500 unread resumes once"
        );
        assert!(!stream.is_paused());
        assert_eq!(stream.held(), 1200 - 500 - second.data.len() as u64);
    }

    #[tokio::test]
    async fn nothing_is_dropped_without_a_reader_when_lossless() {
        let stream = ByteStream::new(config(64, 0, true));
        for _ in 0..10 {
            stream.push(&[9; 50]);
        }
        assert_eq!(
            stream.held(),
            500,
            "pushes past the window are kept, never dropped"
        );
        let mut reader = stream.open(Some(0)).expect("offset 0 still held");
        stream.finish(StreamEnd::Eof);
        let (bytes, end) = read_all(&mut reader, 1 << 20).await;
        assert_eq!(bytes, vec![9; 500]);
        assert_eq!(end, Some(StreamEnd::Eof));
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_bytes_for_late_readers() {
        let stream = ByteStream::new(config(1 << 20, 100, false));
        for i in 0..10u8 {
            assert!(stream.push(&[i; 30]), "never paused without a reader");
        }
        assert_eq!(stream.held(), 100);
        assert_eq!(
            stream.open(Some(10)).err(),
            Some(StreamError::Expired {
                from: 10,
                oldest: 200
            })
        );
        assert_eq!(
            stream.open(Some(301)).err(),
            Some(StreamError::Beyond {
                from: 301,
                end: 300
            })
        );
        let mut reader = stream.open(None).expect("oldest retained");
        let chunk = reader.next(1000).await.expect("chunk");
        assert_eq!(chunk.offset, 200);
        assert_eq!(&chunk.data[..10], &[6; 10]);
    }

    #[tokio::test]
    async fn an_open_reader_is_never_overtaken() {
        let stream = ByteStream::new(config(1000, 10, false));
        let mut reader = stream.open(None).expect("open");
        assert!(stream.push(&[1; 600]));
        assert!(
            !stream.push(&[2; 600]),
            "a lagging reader pauses the producer"
        );
        let first = reader.next(2000).await.expect("chunk");
        assert_eq!(
            first.offset, 0,
            "nothing the reader had not taken was dropped"
        );
        drop(reader);
        for _ in 0..100 {
            assert!(stream.push(&[3; 100]), "no reader: never paused again");
        }
        assert_eq!(stream.held(), 10);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_push_from_another_thread() {
        let stream = ByteStream::new(config(1 << 16, 0, true));
        let mut reader = stream.open(None).expect("open");
        let producer = stream.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..200u32 {
                // A paused producer waits for the resume, as a paused socket would.
                while producer.is_paused() {
                    std::thread::yield_now();
                }
                producer.push(&i.to_le_bytes());
            }
            producer.finish(StreamEnd::Eof);
        });
        let (bytes, end) = read_all(&mut reader, 64).await;
        writer.join().expect("writer thread");
        let expected: Vec<u8> = (0..200u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(bytes, expected);
        assert_eq!(end, Some(StreamEnd::Eof));
    }

    #[tokio::test]
    async fn dropping_a_lagging_reader_resumes_a_lossy_producer() {
        let stream = ByteStream::new(config(100, 0, false));
        let resumed = counting_resume(&stream);
        let reader = stream.open(None).expect("open");
        assert!(!stream.push(&[0; 150]));
        drop(reader);
        assert_eq!(resumed.load(Ordering::SeqCst), 1);
        assert!(!stream.is_paused());
    }
}
