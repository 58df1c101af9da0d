//! FutureService: asyncio futures (`loop.create_future()`) shared between clients.
//!
//! # Invariants
//! - A [`FutureState`] carries the outcome with it: a result only in `Result`, a
//!   message only in `Exception` and `Cancelled`, so an impossible combination cannot
//!   be built.
//! - Waiting never cancels the future (unlike `asyncio.wait_for`).

use std::fmt;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;

use crate::client::Client;
use crate::convert::{required, system_time, to_wire_duration};
use crate::error::Result;
use crate::ids::FutureId;
use crate::scheduler::Cancelled;

/// Extra time the gRPC deadline of a bounded wait allows beyond its timeout, so the
/// daemon's OK answer with a pending future arrives before the deadline.
const WAIT_DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// Pending, or how the future is done (asyncio's `done()`, `cancelled()`, `result()`
/// and `exception()` in one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FutureState {
    /// Not done yet.
    Pending,
    /// Done with this result (`set_result`).
    Result(Vec<u8>),
    /// Done with an exception, described by its message (`set_exception`).
    Exception(String),
    /// Cancelled, with the cancellation message (may be empty).
    Cancelled(String),
    /// A state this client does not know, with its wire value.
    Unknown(i32),
}

impl FutureState {
    /// True once the future is done (asyncio's `done()`).
    pub fn is_done(&self) -> bool {
        !matches!(self, FutureState::Pending)
    }

    /// The state's lowercase name: `pending`, `result`, `exception`, `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            FutureState::Pending => "pending",
            FutureState::Result(_) => "result",
            FutureState::Exception(_) => "exception",
            FutureState::Cancelled(_) => "cancelled",
            FutureState::Unknown(_) => "unknown",
        }
    }

    pub(crate) fn from_wire(
        state: i32,
        result: Vec<u8>,
        exception: String,
        cancel: String,
    ) -> Self {
        match pb::FutureState::try_from(state) {
            Ok(pb::FutureState::Pending) => FutureState::Pending,
            Ok(pb::FutureState::Result) => FutureState::Result(result),
            Ok(pb::FutureState::Exception) => FutureState::Exception(exception),
            Ok(pb::FutureState::Cancelled) => FutureState::Cancelled(cancel),
            _ => FutureState::Unknown(state),
        }
    }
}

impl fmt::Display for FutureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One future, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FutureInfo {
    /// The future's id.
    pub future_id: FutureId,
    /// The loop that owns it.
    pub loop_name: String,
    /// Pending, or its outcome.
    pub state: FutureState,
    /// The Unix uid of the caller that created it.
    pub creator_uid: u32,
    /// When it was created, by the wall clock.
    pub created_at: Option<SystemTime>,
    /// When it became done, by the wall clock; None while pending.
    pub done_at: Option<SystemTime>,
}

impl From<pb::FutureInfo> for FutureInfo {
    fn from(f: pb::FutureInfo) -> Self {
        FutureInfo {
            future_id: FutureId(f.future_id),
            loop_name: f.r#loop,
            state: FutureState::from_wire(f.state, f.result, f.exception_message, f.cancel_message),
            creator_uid: f.creator_uid,
            created_at: system_time(f.created_at),
            done_at: system_time(f.done_at),
        }
    }
}

/// What [`Client::create_future`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedFuture {
    /// The new future (or the original one, if `duplicate`).
    pub future_id: FutureId,
    /// True if the request id matched an earlier request: nothing new was created.
    pub duplicate: bool,
}

fn future_info(info: Option<pb::FutureInfo>) -> Result<FutureInfo> {
    required(info, "future").map(FutureInfo::from)
}

impl Client {
    /// Creates a pending future on a loop (asyncio's `loop.create_future()`), with an
    /// optional idempotency key. Fails with NOT_FOUND (loop), FAILED_PRECONDITION
    /// (loop closed), RESOURCE_EXHAUSTED (quota) or INVALID_ARGUMENT (key too long).
    pub async fn create_future(
        &self,
        loop_name: &str,
        request_id: Option<&str>,
    ) -> Result<CreatedFuture> {
        let request = pb::CreateFutureRequest {
            r#loop: loop_name.to_owned(),
            request_id: request_id.unwrap_or_default().to_owned(),
        };
        let r = self
            .futures
            .clone()
            .create_future(request)
            .await?
            .into_inner();
        Ok(CreatedFuture {
            future_id: FutureId(r.future_id),
            duplicate: r.duplicate,
        })
    }

    /// Sets a pending future's result (`Future.set_result()`). Fails with
    /// FAILED_PRECONDITION if it is already done, NOT_FOUND, or RESOURCE_EXHAUSTED
    /// for a result larger than the daemon's payload limit.
    pub async fn set_result(
        &self,
        loop_name: &str,
        future_id: FutureId,
        result: impl Into<Vec<u8>>,
    ) -> Result<FutureInfo> {
        let request = pb::SetResultRequest {
            r#loop: loop_name.to_owned(),
            future_id: future_id.0,
            result: result.into(),
        };
        let r = self.futures.clone().set_result(request).await?.into_inner();
        future_info(r.future)
    }

    /// Sets a pending future's exception, described by `message`
    /// (`Future.set_exception()`). Fails with FAILED_PRECONDITION if it is already
    /// done, NOT_FOUND, or INVALID_ARGUMENT for a message over 4096 bytes.
    pub async fn set_exception(
        &self,
        loop_name: &str,
        future_id: FutureId,
        message: &str,
    ) -> Result<FutureInfo> {
        let request = pb::SetExceptionRequest {
            r#loop: loop_name.to_owned(),
            future_id: future_id.0,
            message: message.to_owned(),
        };
        let r = self
            .futures
            .clone()
            .set_exception(request)
            .await?
            .into_inner();
        future_info(r.future)
    }

    /// Cancels a future (`Future.cancel(msg)`); a done future is left as it is and
    /// [`Cancelled::cancelled`] is false. Fails with NOT_FOUND.
    pub async fn cancel_future(
        &self,
        loop_name: &str,
        future_id: FutureId,
        message: &str,
    ) -> Result<Cancelled<FutureInfo>> {
        let request = pb::CancelFutureRequest {
            r#loop: loop_name.to_owned(),
            future_id: future_id.0,
            message: message.to_owned(),
        };
        let r = self
            .futures
            .clone()
            .cancel_future(request)
            .await?
            .into_inner();
        Ok(Cancelled {
            cancelled: r.cancelled,
            info: future_info(r.future)?,
        })
    }

    /// Describes a future. Fails with NOT_FOUND for an unknown (or forgotten) future.
    pub async fn get_future(&self, loop_name: &str, future_id: FutureId) -> Result<FutureInfo> {
        let request = pb::GetFutureRequest {
            r#loop: loop_name.to_owned(),
            future_id: future_id.0,
        };
        let r = self.futures.clone().get_future(request).await?.into_inner();
        future_info(r.future)
    }

    /// Waits until a future is done, or `timeout` runs out (then the answer is the
    /// still pending future). Without a timeout it waits as long as the connection
    /// lives. Fails with NOT_FOUND, FAILED_PRECONDITION if the loop is closed while the
    /// future is pending, or [`crate::Error::DurationTooLarge`].
    pub async fn wait_future(
        &self,
        loop_name: &str,
        future_id: FutureId,
        timeout: Option<Duration>,
    ) -> Result<FutureInfo> {
        let mut request = tonic::Request::new(pb::WaitFutureRequest {
            r#loop: loop_name.to_owned(),
            future_id: future_id.0,
            timeout: timeout.map(to_wire_duration).transpose()?,
        });
        if let Some(deadline) = timeout.and_then(|t| t.checked_add(WAIT_DEADLINE_SLACK)) {
            request.set_timeout(deadline);
        }
        let r = self
            .futures
            .clone()
            .wait_future(request)
            .await?
            .into_inner();
        future_info(r.future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_carries_only_its_own_outcome() {
        let r = || (b"r".to_vec(), "e".to_owned(), "c".to_owned());
        let cases = [
            (pb::FutureState::Pending as i32, FutureState::Pending),
            (
                pb::FutureState::Result as i32,
                FutureState::Result(b"r".to_vec()),
            ),
            (
                pb::FutureState::Exception as i32,
                FutureState::Exception("e".into()),
            ),
            (
                pb::FutureState::Cancelled as i32,
                FutureState::Cancelled("c".into()),
            ),
            (0, FutureState::Unknown(0)),
            (42, FutureState::Unknown(42)),
        ];
        for (wire, want) in cases {
            let (result, exception, cancel) = r();
            assert_eq!(
                FutureState::from_wire(wire, result, exception, cancel),
                want
            );
        }
        assert!(!FutureState::Pending.is_done());
        assert!(FutureState::Cancelled(String::new()).is_done());
    }
}
