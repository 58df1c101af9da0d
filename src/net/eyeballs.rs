//! Trying a host's addresses: one after the other, or Happy Eyeballs (RFC 8305) as asyncio's
//! `staggered_race`, with its address interleaving.
//!
//! # Invariants
//! - With a delay, attempt `i + 1` starts when attempt `i` failed or `delay` after attempt
//!   `i` started, whichever comes first; the first attempt to connect wins, and every other
//!   attempt is cancelled (its socket closed) before the winner is returned.
//! - Attempts are tasks on the loop; dropping the race (its caller cancelled) cancels them.
//! - When every attempt failed, the errors are combined in the order the attempts started
//!   (asyncio's rule: one error, or several alike, as the first; else all of them).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::handle::TimerHandle;
use crate::net::dns::Family;
use crate::net::socket;
use crate::task::Task;

/// asyncio's `_interleave_addrinfos`: group by family in order of first appearance, put
/// `first_family_count - 1` addresses of the first family up front, then take one of each
/// family in turn.
pub(crate) fn interleave(addrs: Vec<SocketAddr>, first_family_count: usize) -> Vec<SocketAddr> {
    let mut groups: Vec<VecDeque<SocketAddr>> = Vec::new();
    let mut families: Vec<Family> = Vec::new();
    for addr in addrs {
        let family = Family::of(&addr);
        match families.iter().position(|f| *f == family) {
            Some(i) => groups[i].push_back(addr),
            None => {
                families.push(family);
                groups.push(VecDeque::from([addr]));
            }
        }
    }
    let mut reordered = Vec::new();
    if let Some(first) = groups.first_mut() {
        let take = first_family_count.saturating_sub(1).min(first.len());
        reordered.extend(first.drain(..take));
    }
    while groups.iter().any(|g| !g.is_empty()) {
        reordered.extend(groups.iter_mut().filter_map(VecDeque::pop_front));
    }
    reordered
}

/// Connects to the first of `addrs` that answers: in turn without `delay`, staggered with
/// it. Every socket is bound to `local` first, if given.
pub(crate) async fn connect_any(
    lp: &EventLoop,
    addrs: Vec<SocketAddr>,
    local: Option<SocketAddr>,
    delay: Option<Duration>,
) -> Result<Socket> {
    match delay {
        None => sequential(lp, addrs, local).await,
        Some(delay) => staggered(lp, addrs, local, delay).await,
    }
}

async fn sequential(
    lp: &EventLoop,
    addrs: Vec<SocketAddr>,
    local: Option<SocketAddr>,
) -> Result<Socket> {
    let mut errors = Vec::new();
    for addr in addrs {
        match socket::connect(lp, &addr.into(), &addr.to_string(), local).await {
            Ok(socket) => return Ok(socket),
            Err(err) => errors.push(err),
        }
    }
    Err(combine(errors))
}

/// asyncio's rule: one error, or several with the same message, is raised as the first;
/// otherwise all of them together.
pub(crate) fn combine(mut errors: Vec<Error>) -> Error {
    let Some(first) = errors.first().map(ToString::to_string) else {
        return Error::MultipleErrors(errors);
    };
    if errors.iter().all(|e| e.to_string() == first) {
        return errors.swap_remove(0);
    }
    Error::MultipleErrors(errors)
}

/// What the attempts report to the race.
#[derive(Default)]
struct Race {
    /// Finished attempts, by index, in the order they finished.
    results: VecDeque<(usize, Result<Socket>)>,
    /// Set when something happens, to wake the race.
    wake: Option<Future<()>>,
}

/// The running attempts; dropping it cancels those still running.
struct Attempts(Vec<Task<()>>);

impl Drop for Attempts {
    fn drop(&mut self) {
        for attempt in &self.0 {
            attempt.cancel();
        }
    }
}

/// asyncio's `staggered_race` over connection attempts.
async fn staggered(
    lp: &EventLoop,
    addrs: Vec<SocketAddr>,
    local: Option<SocketAddr>,
    delay: Duration,
) -> Result<Socket> {
    let race = Rc::new(RefCell::new(Race::default()));
    let mut attempts = Attempts(Vec::with_capacity(addrs.len()));
    let mut errors: Vec<Option<Error>> = addrs.iter().map(|_| None).collect();
    let mut failed = 0;
    let mut next_start = Instant::now();
    loop {
        let started = attempts.0.len();
        let latest_failed = started > 0 && errors[started - 1].is_some();
        if started < addrs.len() && (latest_failed || Instant::now() >= next_start) {
            attempts
                .0
                .push(attempt(lp, &race, started, addrs[started], local)?);
            next_start = Instant::now() + delay;
        }
        let finished = race.borrow_mut().results.pop_front();
        match finished {
            Some((_, Ok(socket))) => return Ok(socket), // `attempts` cancels the others
            Some((index, Err(err))) => {
                errors[index] = Some(err);
                failed += 1;
                if failed == addrs.len() {
                    return Err(combine(errors.into_iter().flatten().collect()));
                }
            }
            None => {
                let more = attempts.0.len() < addrs.len();
                wait(lp, &race, more.then_some(next_start)).await?;
            }
        }
    }
}

/// Starts one connection attempt as a task reporting to `race`.
fn attempt(
    lp: &EventLoop,
    race: &Rc<RefCell<Race>>,
    index: usize,
    addr: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Task<()>> {
    let (task_lp, race) = (lp.clone(), race.clone());
    let name = format!("happy eyeballs attempt {index}: {addr}");
    let body = async move {
        let result = socket::connect(&task_lp, &addr.into(), &addr.to_string(), local).await;
        let wake = {
            let mut race = race.borrow_mut();
            race.results.push_back((index, result));
            race.wake.take()
        };
        if let Some(wake) = wake.filter(|w| !w.done()) {
            let _ = wake.set_result(());
        }
    };
    lp.create_task(body, Some(&name))
}

/// Cancels a timer when dropped.
struct TimerGuard(Option<TimerHandle>);

impl Drop for TimerGuard {
    fn drop(&mut self) {
        if let Some(timer) = self.0.take() {
            timer.cancel();
        }
    }
}

/// Waits until an attempt finishes or `deadline` passes.
async fn wait(lp: &EventLoop, race: &Rc<RefCell<Race>>, deadline: Option<Instant>) -> Result<()> {
    let wake = lp.create_future::<()>()?;
    race.borrow_mut().wake = Some(wake.clone());
    let timer = match deadline {
        Some(deadline) => {
            let ring = wake.clone();
            Some(lp.call_at(deadline, move || {
                if !ring.done() {
                    let _ = ring.set_result(());
                }
            })?)
        }
        None => None,
    };
    let _timer = TimerGuard(timer);
    wake.await
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::net::socket::connect_error;

    fn refused(addr: &str) -> Error {
        connect_error(addr.into(), io::ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn failed_attempts_combine_as_asyncio() {
        let cases: [(Vec<Error>, &str); 3] = [
            (vec![refused("a:1")], "connection to a:1 refused"),
            (
                vec![Error::TransportClosing, Error::TransportClosing],
                "transport is closing",
            ),
            (
                vec![refused("a:1"), refused("b:1")],
                "multiple exceptions: connection to a:1 refused: connection refused, \
                 connection to b:1 refused: connection refused",
            ),
        ];
        for (errors, expected) in cases {
            assert_eq!(combine(errors).to_string(), expected);
        }
    }

    #[test]
    fn addresses_interleave_by_family_as_asyncio() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (v6a, v6b, v6c) = (a("[::1]:1"), a("[::2]:1"), a("[::3]:1"));
        let (v4a, v4b) = (a("127.0.0.1:1"), a("127.0.0.2:1"));
        let cases: [(Vec<SocketAddr>, usize, Vec<SocketAddr>); 5] = [
            (vec![v6a, v6b, v4a, v4b], 1, vec![v6a, v4a, v6b, v4b]),
            (vec![v6a, v6b, v6c, v4a], 2, vec![v6a, v6b, v4a, v6c]),
            (vec![v4a, v6a, v6b, v6c], 1, vec![v4a, v6a, v6b, v6c]),
            (vec![v6a, v4a], 9, vec![v6a, v4a]),
            (vec![], 1, vec![]),
        ];
        for (addrs, count, expected) in cases {
            assert_eq!(
                interleave(addrs.clone(), count),
                expected,
                "{addrs:?} by {count}"
            );
        }
    }
}
