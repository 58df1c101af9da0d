//! StartTls: upgrading a client's plain transport to TLS in place (asyncio's
//! `loop.start_tls`).
//!
//! # Invariants
//! - The transport keeps its record, its id and its protocol: the engine is handed the
//!   transport's own [`super::NetProtocol`] back, so no second ConnectionMade is reported
//!   and the decrypted bytes continue the byte stream at the next offset.
//! - A handshake that fails or times out closes the transport without a word to its
//!   protocol (the engine's rule for handshakes); the daemon then calls the protocol's
//!   `connection_lost` with the handshake's error itself, so the record is closed, its
//!   stream ends and ConnectionLost (and TransportInfo.error) names the error.
//! - A transport that speaks TLS (or is being upgraded) is refused with
//!   [`Error::AlreadyTls`] (FAILED_PRECONDITION) before anything is written; the engine's
//!   own "already uses tls" refusal maps to the same error.
//! - `write_first` goes into the plain write buffer in the same loop step that installs
//!   TLS, so it leaves in clear before the first TLS record and the peer's answer to it
//!   can only arrive once the transport expects TLS. It is written only after the
//!   engine's checks passed (`check_start_tls`): a StartTls refused for its arguments (a
//!   bad server name, a zero timeout) sends nothing.

use std::io;
use std::rc::Rc;

use loopd::{StartTlsOptions, TlsContext, Transport};
use loopd_proto::pb;
use tokio::sync::oneshot;

use super::{TransportRec, transport_info};
use crate::loops::LoopCtx;
use crate::status::{Error, Result};

/// A validated StartTls request: the side with its configuration, and asyncio's options.
#[derive(Clone, Debug)]
pub struct StartTlsSpec {
    /// Client or server side, with its rustls configuration.
    pub context: TlsContext,
    /// `server_hostname` (client side) and `ssl_handshake_timeout`.
    pub options: StartTlsOptions,
    /// Written in clear just before the handshake starts.
    pub write_first: Vec<u8>,
}

impl LoopCtx {
    /// StartTls: starts the upgrade on the loop and answers once the handshake ended.
    pub fn net_start_tls(
        self: &Rc<Self>,
        id: u64,
        spec: StartTlsSpec,
        answer: oneshot::Sender<Result<pb::TransportInfo>>,
    ) {
        let opened = self.open_transport(id).and_then(|(rec, transport)| {
            if self.speaks_tls(&rec, &transport) {
                return Err(Error::AlreadyTls(id));
            }
            let protocol = transport.get_protocol().ok_or(Error::TransportClosed(id))?;
            if !spec.write_first.is_empty() {
                // A refused upgrade must not have sent the clear go-ahead: the peer would
                // start a handshake nobody answers. (Without it, start_tls's own checks
                // suffice: nothing was written.)
                let name = spec.options.server_hostname.clone();
                self.lp
                    .check_start_tls(&transport, &spec.context, &spec.options)
                    .map_err(|err| start_tls_error(id, name, err))?;
                transport
                    .write(&spec.write_first)
                    .map_err(|source| Error::TransportWrite { id, source })?;
                rec.count_written(spec.write_first.len());
            }
            Ok((rec, transport, protocol))
        });
        let (rec, transport, protocol) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                let _ = answer.send(Err(err));
                return;
            }
        };
        rec.tls_started.set(true);
        let name = spec.options.server_hostname.clone();
        let upgrade = self
            .lp
            .start_tls(&transport, protocol.clone(), spec.context, spec.options);
        let ctx = self.clone();
        self.spawn(async move {
            let result = match upgrade.await {
                Ok(_) => {
                    // The engine read for the handshake whatever held the transport back.
                    rec.sync_reading();
                    Ok(transport_info(&ctx, &rec))
                }
                Err(err) => {
                    let failed = matches!(
                        err,
                        loopd::Error::TlsHandshake { .. } | loopd::Error::HandshakeTimeout { .. }
                    );
                    let err = start_tls_error(id, name, err);
                    if !failed {
                        // Refused before any handshake (e.g. a bad server name): the
                        // transport is still plain and may be upgraded again.
                        rec.tls_started.set(false);
                    }
                    if failed {
                        // The engine closes the transport without telling the protocol,
                        // which saw its connection made: tell it here, once.
                        let lost = io::Error::other(err.to_string());
                        protocol.borrow_mut().connection_lost(Some(lost));
                    }
                    Err(err)
                }
            };
            let _ = answer.send(result);
        });
    }
}

impl LoopCtx {
    /// Whether the transport speaks TLS already: accepted by a TLS server, opened with
    /// TLS (its handshake is done, so it has a cipher), or upgraded (or upgrading).
    fn speaks_tls(&self, rec: &TransportRec, transport: &Transport) -> bool {
        let server_tls = self
            .net
            .servers
            .borrow()
            .get(&rec.server_id)
            .is_some_and(|server| server.tls);
        rec.tls_started.get() || server_tls || transport.get_extra_info("cipher").is_some()
    }
}

/// The daemon's error for an engine refusal of `start_tls` on transport `id`.
fn start_tls_error(id: u64, server_name: Option<String>, err: loopd::Error) -> Error {
    match err {
        loopd::Error::InvalidArgument {
            what: "transport", ..
        } => Error::AlreadyTls(id),
        loopd::Error::InvalidArgument { .. } | loopd::Error::Closed => Error::Engine(err),
        source => Error::StartTls {
            id,
            server_name: server_name
                .map(|n| format!(" for server name {n:?}"))
                .unwrap_or_default(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn engine_refusals_map_to_their_codes_naming_the_transport() {
        let cases = [
            (
                loopd::Error::InvalidArgument {
                    what: "transport",
                    value: "it already uses tls".into(),
                },
                Code::FailedPrecondition,
                "transport 7 already speaks tls",
            ),
            (
                loopd::Error::TransportClosing,
                Code::FailedPrecondition,
                "transport 7",
            ),
            (
                loopd::Error::TlsHandshake {
                    peer: "127.0.0.1:9".into(),
                    reason: "invalid peer certificate".into(),
                },
                Code::Unavailable,
                "server name \"wrong.example\"",
            ),
            (
                loopd::Error::HandshakeTimeout {
                    peer: "127.0.0.1:9".into(),
                    after: std::time::Duration::from_millis(200),
                },
                Code::DeadlineExceeded,
                "200ms",
            ),
            (
                loopd::Error::InvalidArgument {
                    what: "server_hostname",
                    value: "empty".into(),
                },
                Code::InvalidArgument,
                "server_hostname",
            ),
        ];
        for (err, code, needle) in cases {
            let err = start_tls_error(7, Some("wrong.example".into()), err);
            assert_eq!(err.code(), code, "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
