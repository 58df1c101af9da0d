//! LoopService: the daemon's named loops and their lifecycle (asyncio's policy and
//! `run_forever`/`stop`/`close`/`set_debug`/`time`).
//!
//! # Invariants
//! - A loop is named by `&str`; the empty string means `default`, which always exists.
//! - Every method returns the loop's snapshot after the request, as a [`LoopInfo`].

use std::fmt;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;

use crate::client::Client;
use crate::convert::{duration, required, required_time, system_time, to_wire_duration};
use crate::error::Result;

/// Where a loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Running (asyncio's `is_running()`).
    Running,
    /// Not running and not closed: it waits for `start_loop`.
    Stopped,
    /// Closed (asyncio's `is_closed()`); it accepts no more work.
    Closed,
}

impl LoopState {
    /// The state's lowercase name: `running`, `stopped` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopState::Running => "running",
            LoopState::Stopped => "stopped",
            LoopState::Closed => "closed",
        }
    }
}

impl fmt::Display for LoopState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one loop, taken on its thread between two iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopInfo {
    /// The loop's name (`default` for the default loop; never empty).
    pub name: String,
    /// Running, stopped or closed.
    pub state: LoopState,
    /// Debug mode (asyncio's `get_debug()`).
    pub debug: bool,
    /// Callbacks slower than this are reported in debug mode.
    pub slow_callback_duration: Duration,
    /// The loop's time in seconds (asyncio's `loop.time()`).
    pub time: f64,
    /// The wall clock read together with `time`.
    pub wall_time: Option<SystemTime>,
    /// When the loop was created.
    pub created_at: Option<SystemTime>,
    /// Callbacks in the ready queue.
    pub ready_callbacks: u64,
    /// Timers scheduled and neither fired nor cancelled.
    pub timers_scheduled: u64,
    /// Cancelled timers still in the heap.
    pub timers_cancelled: u64,
    /// Futures not done yet.
    pub futures_pending: u64,
    /// Open event streams.
    pub subscribers: u64,
    /// Seq of the newest event in the ring; 0 if none yet.
    pub last_event_seq: u64,
}

impl From<pb::LoopInfo> for LoopInfo {
    fn from(info: pb::LoopInfo) -> Self {
        let state = match (info.closed, info.running) {
            (true, _) => LoopState::Closed,
            (false, true) => LoopState::Running,
            (false, false) => LoopState::Stopped,
        };
        LoopInfo {
            name: info.name,
            state,
            debug: info.debug,
            // A negative threshold is refused by the daemon; show it as zero if sent.
            slow_callback_duration: duration(info.slow_callback_duration, "slow_callback_duration")
                .unwrap_or_default(),
            time: info.time,
            wall_time: system_time(info.wall_time),
            created_at: system_time(info.created_at),
            ready_callbacks: info.ready_callbacks,
            timers_scheduled: info.timers_scheduled,
            timers_cancelled: info.timers_cancelled,
            futures_pending: info.futures_pending,
            subscribers: info.subscribers,
            last_event_seq: info.last_event_seq,
        }
    }
}

/// Settings for a new loop ([`Client::create_loop`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Start in debug mode.
    pub debug: bool,
    /// Threshold for slow callbacks; None: the daemon's default (100 ms, as asyncio).
    pub slow_callback_duration: Option<Duration>,
}

/// A loop's clock and the wall clock, read together ([`Client::time`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopTime {
    /// The loop's time in seconds (asyncio's `loop.time()`); use it for `call_at`.
    pub time: f64,
    /// The wall clock read right after `time`.
    pub wall_time: SystemTime,
}

fn loop_info(info: Option<pb::LoopInfo>) -> Result<LoopInfo> {
    required(info, "loop_info").map(LoopInfo::from)
}

fn optional_duration(d: Option<Duration>) -> Result<Option<prost_types::Duration>> {
    d.map(to_wire_duration).transpose()
}

impl Client {
    /// Lists every loop, running, stopped or closed, ordered by name.
    ///
    /// Fails with UNAVAILABLE while the daemon shuts down.
    pub async fn list_loops(&self) -> Result<Vec<LoopInfo>> {
        let response = self
            .loops
            .clone()
            .list_loops(pb::ListLoopsRequest {})
            .await?;
        Ok(response
            .into_inner()
            .loops
            .into_iter()
            .map(LoopInfo::from)
            .collect())
    }

    /// Creates a loop and starts running it.
    ///
    /// Fails with INVALID_ARGUMENT for a bad name, ALREADY_EXISTS if a loop of that
    /// name is not closed, RESOURCE_EXHAUSTED past the daemon's loop limit.
    pub async fn create_loop(&self, loop_name: &str, options: &LoopOptions) -> Result<LoopInfo> {
        let request = pb::CreateLoopRequest {
            r#loop: loop_name.to_owned(),
            debug: options.debug,
            slow_callback_duration: optional_duration(options.slow_callback_duration)?,
        };
        let response = self.loops.clone().create_loop(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Describes one loop. Fails with NOT_FOUND for an unknown loop.
    pub async fn get_loop(&self, loop_name: &str) -> Result<LoopInfo> {
        let request = pb::GetLoopRequest {
            r#loop: loop_name.to_owned(),
        };
        let response = self.loops.clone().get_loop(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Starts a stopped loop again (asyncio's `run_forever`); a running loop is left
    /// as it is. Fails with NOT_FOUND, or FAILED_PRECONDITION if the loop is closed.
    pub async fn start_loop(&self, loop_name: &str) -> Result<LoopInfo> {
        let request = pb::StartLoopRequest {
            r#loop: loop_name.to_owned(),
        };
        let response = self.loops.clone().start_loop(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Stops a loop as asyncio's `loop.stop()`, returning once it has stopped.
    /// Fails with NOT_FOUND, or FAILED_PRECONDITION if the loop is closed.
    pub async fn stop_loop(&self, loop_name: &str) -> Result<LoopInfo> {
        let request = pb::StopLoopRequest {
            r#loop: loop_name.to_owned(),
        };
        let response = self.loops.clone().stop_loop(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Closes a stopped loop as asyncio's `loop.close()`. Fails with NOT_FOUND, or
    /// FAILED_PRECONDITION if the loop is running or is `default`.
    pub async fn close_loop(&self, loop_name: &str) -> Result<LoopInfo> {
        let request = pb::CloseLoopRequest {
            r#loop: loop_name.to_owned(),
        };
        let response = self.loops.clone().close_loop(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Turns debug mode on or off (asyncio's `set_debug`), and sets the slow-callback
    /// threshold if given. Fails with NOT_FOUND, FAILED_PRECONDITION if the loop is
    /// closed, or [`crate::Error::DurationTooLarge`].
    pub async fn set_debug(
        &self,
        loop_name: &str,
        debug: bool,
        slow_callback_duration: Option<Duration>,
    ) -> Result<LoopInfo> {
        let request = pb::SetDebugRequest {
            r#loop: loop_name.to_owned(),
            debug,
            slow_callback_duration: optional_duration(slow_callback_duration)?,
        };
        let response = self.loops.clone().set_debug(request).await?;
        loop_info(response.into_inner().loop_info)
    }

    /// Reads the loop's clock (asyncio's `loop.time()`) and the wall clock.
    /// Fails with NOT_FOUND for an unknown loop.
    pub async fn time(&self, loop_name: &str) -> Result<LoopTime> {
        let request = pb::GetTimeRequest {
            r#loop: loop_name.to_owned(),
        };
        let response = self.loops.clone().get_time(request).await?.into_inner();
        Ok(LoopTime {
            time: response.time,
            wall_time: required_time(response.wall_time, "wall_time")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_state_from_flags() {
        let cases = [
            (false, false, LoopState::Stopped),
            (true, false, LoopState::Running),
            (false, true, LoopState::Closed),
            (true, true, LoopState::Closed),
        ];
        for (running, closed, want) in cases {
            let info = LoopInfo::from(pb::LoopInfo {
                name: "x".into(),
                running,
                closed,
                ..Default::default()
            });
            assert_eq!(info.state, want, "running={running} closed={closed}");
        }
    }
}
