//! Reading loopd's lossless byte streams (a transport's received bytes, a process's output)
//! with credit-based flow control, as `streams.proto` describes.
//!
//! # Invariants
//! - The reader grants `window` bytes up front and tops the grant up to `window` again once
//!   fewer than half of it are outstanding, so the daemon never has more than `window`
//!   bytes in flight to this reader, and a reader that stops calling [`ByteReader::next`]
//!   stops the producer (the daemon pauses the socket or pipe) instead of buffering.
//! - Chunks come in offset order with no holes; a hole or an overlap is reported as
//!   [`Error::InvalidField`] rather than handed on as data.
//! - The last chunk carries the end ([`StreamEnd`]); after it, `next` returns `None`.

use bytes::Bytes;
use loopd_proto::pb;

use crate::error::{Error, Result};

/// The default credit window: how many bytes may be in flight to one reader.
pub const DEFAULT_WINDOW: u64 = 4 * 1024 * 1024;

/// How a byte stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// End of file: the peer or the child closed its side.
    Eof,
    /// The stream ended with an error (e.g. the transport's connection_lost error).
    Error(String),
}

/// One piece of a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteChunk {
    /// Offset of `data[0]` in the stream.
    pub offset: u64,
    /// The bytes (empty only in a last chunk).
    pub data: Bytes,
    /// Set on the last chunk.
    pub end: Option<StreamEnd>,
}

/// Sends one credit message on the request stream; `false` when that stream is gone.
type Grant = Box<dyn FnMut(u64) -> bool + Send>;

/// A lossless byte stream being read; see the module docs.
pub struct ByteReader {
    chunks: tonic::Streaming<pb::ByteChunk>,
    grant: Grant,
    credit: Credit,
    ended: bool,
}

/// The reader's bookkeeping: credit outstanding and the offset expected next.
#[derive(Debug)]
struct Credit {
    window: u64,
    outstanding: u64,
    next_offset: Option<u64>,
}

impl ByteReader {
    /// Wraps a read RPC's response. `grant(n)` must send a credit of `n` bytes on the
    /// request stream; the first grant (`window` bytes) is sent here.
    pub fn new(
        chunks: tonic::Streaming<pb::ByteChunk>,
        window: u64,
        grant: impl FnMut(u64) -> bool + Send + 'static,
    ) -> Self {
        let window = window.max(1);
        let mut grant: Grant = Box::new(grant);
        grant(window);
        ByteReader {
            chunks,
            grant,
            credit: Credit {
                window,
                outstanding: window,
                next_offset: None,
            },
            ended: false,
        }
    }

    /// The next chunk, or `None` after the last one. Grants more credit as needed.
    ///
    /// Fails with the daemon's status when the stream fails, and with
    /// [`Error::InvalidField`] when chunks arrive out of order or beyond the credit.
    pub async fn next(&mut self) -> Result<Option<ByteChunk>> {
        if self.ended {
            return Ok(None);
        }
        let Some(raw) = self.chunks.message().await? else {
            self.ended = true;
            return Ok(None);
        };
        let chunk = self.credit.accept(raw)?;
        if chunk.end.is_some() {
            self.ended = true;
        } else if let Some(top_up) = self.credit.top_up()
            && (self.grant)(top_up)
        {
            self.credit.outstanding += top_up;
        }
        Ok(Some(chunk))
    }
}

impl Credit {
    /// The credit to grant now, if the outstanding credit fell below half the window.
    fn top_up(&self) -> Option<u64> {
        (self.outstanding < self.window / 2).then(|| self.window - self.outstanding)
    }

    /// Checks a chunk against the offsets and the credit, and converts it.
    fn accept(&mut self, raw: pb::ByteChunk) -> Result<ByteChunk> {
        let len = raw.data.len() as u64;
        if let Some(expected) = self.next_offset
            && raw.offset != expected
        {
            return Err(Error::InvalidField {
                field: "ByteChunk.offset",
                value: format!("{} where {expected} was next", raw.offset),
            });
        }
        if len > self.outstanding {
            return Err(Error::InvalidField {
                field: "ByteChunk.data",
                value: format!("{len} bytes with only {} bytes of credit", self.outstanding),
            });
        }
        self.outstanding -= len;
        self.next_offset = Some(raw.offset + len);
        let end = match (raw.eof, raw.error.is_empty()) {
            (false, _) => None,
            (true, true) => Some(StreamEnd::Eof),
            (true, false) => Some(StreamEnd::Error(raw.error)),
        };
        Ok(ByteChunk {
            offset: raw.offset,
            data: raw.data,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, len: usize, eof: bool, error: &str) -> pb::ByteChunk {
        pb::ByteChunk {
            offset,
            data: Bytes::from(vec![b'x'; len]),
            eof,
            error: error.to_owned(),
        }
    }

    #[test]
    fn credit_is_topped_up_below_half_the_window() {
        let mut credit = Credit {
            window: 100,
            outstanding: 100,
            next_offset: None,
        };
        credit.accept(chunk(40, 50, false, "")).expect("in credit");
        assert_eq!(
            credit.top_up(),
            None,
            "50 outstanding is half: no top-up yet"
        );
        credit.accept(chunk(90, 1, false, "")).expect("in order");
        assert_eq!(credit.top_up(), Some(51));
    }

    #[test]
    fn holes_overlaps_and_overdrafts_are_malformed() {
        let cases = [
            (chunk(10, 5, false, ""), "ByteChunk.offset"),
            (chunk(4, 5, false, ""), "ByteChunk.offset"),
            (chunk(5, 101, false, ""), "ByteChunk.data"),
        ];
        for (bad, field) in cases {
            let mut credit = Credit {
                window: 200,
                outstanding: 100,
                next_offset: Some(5),
            };
            match credit.accept(bad) {
                Err(Error::InvalidField { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected {field} to be invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_last_chunk_carries_the_end() {
        let mut credit = Credit {
            window: 10,
            outstanding: 10,
            next_offset: None,
        };
        let eof = credit.accept(chunk(0, 0, true, "")).expect("eof");
        assert_eq!(eof.end, Some(StreamEnd::Eof));
        let failed = credit
            .accept(chunk(0, 2, true, "reset"))
            .expect("error end");
        assert_eq!(failed.end, Some(StreamEnd::Error("reset".into())));
    }
}
