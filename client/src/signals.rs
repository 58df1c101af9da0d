//! SignalService: handlers for Unix signals sent to the daemon (asyncio's
//! `loop.add_signal_handler`): when the daemon gets the signal, the loop runs an
//! [`Action`] and emits a SignalReceived event.

use loopd_proto::pb;

use crate::client::Client;
use crate::convert::required;
use crate::error::Result;
use crate::scheduler::Action;

/// One signal handler of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalHandler {
    /// The signal number.
    pub signal: i32,
    /// Its name, e.g. `SIGUSR1`.
    pub name: String,
    /// What runs when it arrives (the default: only the event).
    pub action: Action,
    /// How many times it ran.
    pub runs: u64,
}

impl SignalHandler {
    fn from_wire(h: pb::SignalHandlerInfo) -> SignalHandler {
        SignalHandler {
            signal: h.signal,
            name: h.name,
            action: Action::from_wire(h.action),
            runs: h.runs,
        }
    }
}

impl Client {
    /// Runs `action` on the loop whenever the daemon receives `signal` (a number or a
    /// name, e.g. `"SIGUSR1"`, `"usr1"`, `"10"`), replacing the loop's earlier handler;
    /// returns the handler and whether it replaced one. Fails with INVALID_ARGUMENT
    /// (unknown or uncatchable signal, e.g. SIGKILL), FAILED_PRECONDITION (a signal the
    /// daemon keeps, e.g. SIGTERM), NOT_FOUND.
    pub async fn add_signal_handler(
        &self,
        loop_name: &str,
        signal: &str,
        action: Option<Action>,
    ) -> Result<(SignalHandler, bool)> {
        let request = pb::AddSignalHandlerRequest {
            r#loop: loop_name.to_owned(),
            signal: signal.to_owned(),
            action: action.map(Action::into_wire),
        };
        let r = self
            .signals
            .clone()
            .add_signal_handler(request)
            .await?
            .into_inner();
        let handler = required(r.handler, "handler")?;
        Ok((SignalHandler::from_wire(handler), r.replaced))
    }

    /// Removes the loop's handler of `signal`; whether there was one. Fails with
    /// INVALID_ARGUMENT (unknown signal) or NOT_FOUND.
    pub async fn remove_signal_handler(&self, loop_name: &str, signal: &str) -> Result<bool> {
        let request = pb::RemoveSignalHandlerRequest {
            r#loop: loop_name.to_owned(),
            signal: signal.to_owned(),
        };
        let r = self
            .signals
            .clone()
            .remove_signal_handler(request)
            .await?
            .into_inner();
        Ok(r.removed)
    }

    /// The loop's signal handlers by signal number. Fails with NOT_FOUND.
    pub async fn list_signal_handlers(&self, loop_name: &str) -> Result<Vec<SignalHandler>> {
        let request = pb::ListSignalHandlersRequest {
            r#loop: loop_name.to_owned(),
        };
        let r = self
            .signals
            .clone()
            .list_signal_handlers(request)
            .await?
            .into_inner();
        Ok(r.handlers
            .into_iter()
            .map(SignalHandler::from_wire)
            .collect())
    }
}
