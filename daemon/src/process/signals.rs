//! Signal names and numbers, and the signal handlers a loop runs for SignalService.
//!
//! # Invariants
//! - A handler lives in its loop thread's table and in the engine's
//!   `add_signal_handler`; both change together, on the loop thread.
//! - SIGKILL, SIGSTOP and the fault signals (SIGILL, SIGFPE, SIGSEGV, SIGBUS) are refused
//!   as INVALID_ARGUMENT; SIGTERM and SIGINT (the daemon's shutdown signals, unless
//!   handed over in the config), SIGPIPE and SIGCHLD as FAILED_PRECONDITION: removing a
//!   handler restores `SIG_DFL`, which for SIGPIPE would let a closed socket kill the
//!   daemon.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use loopd::Handle;
use loopd_proto::pb;
use pb::event::Kind as EventKind;

use crate::loops::LoopCtx;
use crate::status::{Error, Result};

/// The classic signals by number, as `kill -l` names them (without `SIG`).
const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGILL, "ILL"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGBUS, "BUS"),
    (libc::SIGFPE, "FPE"),
    (libc::SIGKILL, "KILL"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGSEGV, "SEGV"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGPIPE, "PIPE"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGSTKFLT, "STKFLT"),
    (libc::SIGCHLD, "CHLD"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGSTOP, "STOP"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGURG, "URG"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

/// Parses a signal: a number (`"15"`), or a name with or without `SIG`, any case
/// (`"SIGTERM"`, `"term"`), or `RTMIN+n` / `RTMAX-n`. INVALID_ARGUMENT naming the value
/// for anything else, and for numbers outside `1..=SIGRTMAX`.
pub fn parse(text: &str) -> Result<i32> {
    let bad = |why: &str| Error::invalid("signal", format!("{text:?} ({why})"));
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        if (1..=libc::SIGRTMAX()).contains(&n) {
            return Ok(n);
        }
        return Err(bad(&format!("not in 1..={}", libc::SIGRTMAX())));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((n, _)) = NAMES.iter().find(|(_, n)| *n == name) {
        return Ok(*n);
    }
    realtime(name).ok_or_else(|| bad("not a signal name or number"))
}

/// `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n`.
fn realtime(name: &str) -> Option<i32> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let sig = if let Some(rest) = name.strip_prefix("RTMIN") {
        min + offset(rest, '+')?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        max - offset(rest, '-')?
    } else {
        return None;
    };
    (min..=max).contains(&sig).then_some(sig)
}

fn offset(rest: &str, sign: char) -> Option<i32> {
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix(sign)?.parse().ok()
}

/// The signal's name: `SIGTERM`, `SIGRTMIN+3`, or the number for others.
pub fn name(sig: i32) -> String {
    if let Some((_, n)) = NAMES.iter().find(|(s, _)| *s == sig) {
        return format!("SIG{n}");
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match sig {
        s if s == min => "SIGRTMIN".into(),
        s if s == max => "SIGRTMAX".into(),
        s if s > min && s < max => format!("SIGRTMIN+{}", s - min),
        s => s.to_string(),
    }
}

/// Checks that a client may handle `sig`, given the shutdown signals `handover` hands
/// over (names such as `"SIGINT"`).
pub fn check_handleable(sig: i32, handover: &[String]) -> Result<()> {
    let named = || format!("{} ({sig})", name(sig));
    match sig {
        libc::SIGKILL | libc::SIGSTOP => Err(Error::invalid(
            "signal",
            format!("{} cannot be caught", named()),
        )),
        libc::SIGILL | libc::SIGFPE | libc::SIGSEGV | libc::SIGBUS => Err(Error::invalid(
            "signal",
            format!("{} reports a fault and cannot be handled", named()),
        )),
        libc::SIGTERM | libc::SIGINT if !handover.contains(&name(sig)) => {
            Err(Error::SignalReserved {
                signal: named(),
                why: "it shuts the daemon down (hand it over with [signals] handover)",
            })
        }
        libc::SIGPIPE | libc::SIGCHLD => Err(Error::SignalReserved {
            signal: named(),
            why: "the daemon relies on its disposition",
        }),
        _ => Ok(()),
    }
}

/// One handler of a loop.
struct Installed {
    action: Option<pb::Action>,
    runs: u64,
    /// Keeps the engine's handler; cancelled when replaced or removed.
    _handle: Handle,
}

thread_local! {
    /// The signal handlers of the loop running on this thread.
    static HANDLERS: RefCell<BTreeMap<i32, Installed>> = const { RefCell::new(BTreeMap::new()) };
}

fn info(sig: i32, h: &Installed) -> pb::SignalHandlerInfo {
    pb::SignalHandlerInfo {
        signal: sig,
        name: name(sig),
        action: h.action.clone(),
        runs: h.runs,
    }
}

/// Installs (or replaces) the loop's handler of `sig`; returns it and whether it
/// replaced one. Runs on the loop thread.
pub fn add(
    ctx: &Rc<LoopCtx>,
    sig: i32,
    action: Option<pb::Action>,
) -> Result<(pb::SignalHandlerInfo, bool)> {
    ctx.check_open()?;
    ctx.check_target(action.as_ref())?;
    let weak = Rc::downgrade(ctx);
    let handle = ctx
        .lp
        .add_signal_handler(sig, move || on_signal(&weak, sig))?;
    let installed = Installed {
        action,
        runs: 0,
        _handle: handle,
    };
    let answer = info(sig, &installed);
    let replaced = HANDLERS.with(|h| h.borrow_mut().insert(sig, installed));
    Ok((answer, replaced.is_some()))
}

/// Removes the loop's handler of `sig`; whether there was one.
pub fn remove(ctx: &LoopCtx, sig: i32) -> Result<bool> {
    let removed = HANDLERS.with(|h| h.borrow_mut().remove(&sig));
    if removed.is_none() {
        // Not ours: the engine is not asked, so a signal the daemon keeps (SIGTERM) never
        // has its disposition reset.
        return Ok(false);
    }
    ctx.lp.remove_signal_handler(sig)?;
    Ok(true)
}

/// The loop's handlers by signal number.
pub fn list() -> Vec<pb::SignalHandlerInfo> {
    HANDLERS.with(|h| h.borrow().iter().map(|(s, i)| info(*s, i)).collect())
}

/// Forgets the handlers of a loop that closes (the engine dropped its own).
pub fn close_loop() {
    let handlers = HANDLERS.with(|h| std::mem::take(&mut *h.borrow_mut()));
    drop(handlers);
}

/// The engine calls this when `sig` arrives: run the action, then report it.
fn on_signal(ctx: &Weak<LoopCtx>, sig: i32) {
    let Some(ctx) = ctx.upgrade() else { return };
    let action = HANDLERS.with(|h| {
        let mut h = h.borrow_mut();
        let installed = h.get_mut(&sig)?;
        installed.runs += 1;
        Some(installed.action.clone())
    });
    let Some(action) = action else { return };
    let error = ctx.run_action(action.as_ref()).err().map(|e| e.to_string());
    let (tag, payload) = crate::local::tag_and_payload(action.as_ref());
    ctx.emit(EventKind::SignalReceived(pb::SignalReceived {
        signal: sig,
        name: name(sig),
        action: crate::local::action_kind(action.as_ref()) as i32,
        tag,
        payload,
        error: error.unwrap_or_default(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_name() {
        let cases: &[(&str, Option<i32>)] = &[
            ("15", Some(libc::SIGTERM)),
            ("SIGTERM", Some(libc::SIGTERM)),
            ("term", Some(libc::SIGTERM)),
            ("Usr1", Some(libc::SIGUSR1)),
            ("SIGRTMIN+2", Some(libc::SIGRTMIN() + 2)),
            ("rtmax", Some(libc::SIGRTMAX())),
            ("0", None),
            ("-9", None),
            ("999", None),
            ("SIGNOPE", None),
            ("", None),
            ("RTMIN+99", None),
        ];
        for (text, want) in cases {
            match (parse(text), want) {
                (Ok(got), Some(want)) => assert_eq!(got, *want, "{text}"),
                (Err(err), None) => {
                    assert!(err.to_string().contains(&format!("{text:?}")), "{err}")
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for sig in 1..=libc::SIGRTMAX() {
            if (32..libc::SIGRTMIN()).contains(&sig) {
                continue; // reserved by the C library
            }
            assert_eq!(parse(&name(sig)).unwrap(), sig, "{}", name(sig));
        }
    }

    #[test]
    fn the_daemons_signals_are_refused_with_the_right_code() {
        use tonic::Code;
        let none: &[String] = &[];
        let cases = [
            (libc::SIGKILL, none, Some(Code::InvalidArgument)),
            (libc::SIGSTOP, none, Some(Code::InvalidArgument)),
            (libc::SIGSEGV, none, Some(Code::InvalidArgument)),
            (libc::SIGTERM, none, Some(Code::FailedPrecondition)),
            (libc::SIGINT, none, Some(Code::FailedPrecondition)),
            (libc::SIGPIPE, none, Some(Code::FailedPrecondition)),
            (libc::SIGUSR1, none, None),
            (libc::SIGHUP, none, None),
        ];
        for (sig, handover, want) in cases {
            match (check_handleable(sig, handover), want) {
                (Ok(()), None) => {}
                (Err(err), Some(code)) => {
                    assert_eq!(err.code(), code, "{err}");
                    assert!(err.to_string().contains(&name(sig)), "{err}");
                }
                (got, want) => panic!("{sig}: got {got:?}, want {want:?}"),
            }
        }
        let handed = ["SIGINT".to_owned()];
        assert!(check_handleable(libc::SIGINT, &handed).is_ok());
        assert!(check_handleable(libc::SIGTERM, &handed).is_err());
    }
}
