//! ProcessService: child processes of a loop, their stdin, signals, exit and output.

use std::time::Duration;

use loopd_proto::ProcessService;
use loopd_proto::pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::{Api, caller_uid, grpc_timeout, non_negative};
use crate::bytestream::{ChunkStream, serve_read_rpc};
use crate::process::{self, Spec, fifo, signals};
use crate::status::{Error, Result};

/// How much sooner than the call's deadline Wait answers (see FutureService.WaitFuture).
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

impl Api {
    async fn wait_process(
        &self,
        loop_name: &str,
        id: u64,
        timeout: Option<Duration>,
        deadline: Option<Duration>,
    ) -> Result<pb::ProcessInfo> {
        let shared = self.daemon.registry.get(loop_name)?;
        let (tx, rx) = oneshot::channel();
        if let Some(done) = shared.call(move |ctx| process::wait(ctx, id, tx)).await? {
            return Ok(done);
        }
        let deadline = deadline.map(|d| d.saturating_sub(DEADLINE_MARGIN.min(d / 10)));
        let (limit, on_limit_get) = match (timeout, deadline) {
            (Some(t), Some(d)) if d < t => (Some(d), false),
            (Some(t), _) => (Some(t), true),
            (None, d) => (d, false),
        };
        let sleep = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let mut shutdown = self.daemon.shutdown.clone();
        tokio::select! {
            done = rx => done.map_err(|_| shared.gone()),
            () = sleep => {
                if on_limit_get {
                    shared.call(move |ctx| process::get(ctx, id)).await
                } else {
                    Err(Error::DeadlineExceeded(limit.unwrap_or_default(), id))
                }
            }
            () = async { let _ = shutdown.wait_for(|down| *down).await; } => Err(Error::ShuttingDown),
        }
    }

    async fn signal(
        &self,
        loop_name: &str,
        id: u64,
        sig: i32,
        group: Option<bool>,
    ) -> Result<bool> {
        let shared = self.daemon.registry.get(loop_name)?;
        shared
            .call(move |ctx| match group {
                Some(to_group) => process::send_signal(ctx, id, sig, to_group),
                None => process::terminate(ctx, id, sig),
            })
            .await
    }
}

fn output_fd(raw: i32) -> Result<i32> {
    match pb::OutputFd::try_from(raw) {
        Ok(pb::OutputFd::Stdout) => Ok(1),
        Ok(pb::OutputFd::Stderr) => Ok(2),
        _ => Err(Error::invalid("fd", format!("{raw} (STDOUT or STDERR)"))),
    }
}

#[tonic::async_trait]
impl ProcessService for Api {
    type ReadOutputStream = ChunkStream;
    type ReadFifoStream = ChunkStream;

    async fn spawn(
        &self,
        request: Request<pb::SpawnRequest>,
    ) -> Result<Response<pb::SpawnResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let spec = Spec::check(req.spec.as_ref(), process::settings())?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let info = shared
            .call(move |ctx| process::spawn(ctx, uid, &spec))
            .await?;
        Ok(Response::new(pb::SpawnResponse {
            process: Some(info),
        }))
    }

    async fn write_stdin(
        &self,
        request: Request<pb::WriteStdinRequest>,
    ) -> Result<Response<pb::WriteStdinResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, data, eof) = (req.process_id, req.data, req.eof);
        let buffered_bytes = shared
            .call(move |ctx| process::write_stdin(ctx, id, &data, eof))
            .await?;
        Ok(Response::new(pb::WriteStdinResponse { buffered_bytes }))
    }

    async fn close_stdin(
        &self,
        request: Request<pb::CloseStdinRequest>,
    ) -> Result<Response<pb::CloseStdinResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.process_id;
        shared
            .call(move |ctx| process::close_stdin(ctx, id))
            .await?;
        Ok(Response::new(pb::CloseStdinResponse {}))
    }

    async fn send_signal(
        &self,
        request: Request<pb::SendSignalRequest>,
    ) -> Result<Response<pb::SendSignalResponse>, Status> {
        let req = request.into_inner();
        let sig = signals::parse(&req.signal)?;
        let delivered = self
            .signal(&req.r#loop, req.process_id, sig, Some(req.to_group))
            .await?;
        Ok(Response::new(pb::SendSignalResponse {
            delivered,
            signal: sig,
        }))
    }

    async fn terminate(
        &self,
        request: Request<pb::TerminateRequest>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        let req = request.into_inner();
        let delivered = self
            .signal(&req.r#loop, req.process_id, libc::SIGTERM, None)
            .await?;
        Ok(Response::new(pb::TerminateResponse { delivered }))
    }

    async fn kill(
        &self,
        request: Request<pb::KillRequest>,
    ) -> Result<Response<pb::KillResponse>, Status> {
        let req = request.into_inner();
        let delivered = self
            .signal(&req.r#loop, req.process_id, libc::SIGKILL, None)
            .await?;
        Ok(Response::new(pb::KillResponse { delivered }))
    }

    async fn wait(
        &self,
        request: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let deadline = grpc_timeout(request.metadata());
        let req = request.into_inner();
        let timeout = req
            .timeout
            .as_ref()
            .map(|t| non_negative("timeout", t))
            .transpose()?;
        let info = self
            .wait_process(&req.r#loop, req.process_id, timeout, deadline)
            .await?;
        Ok(Response::new(pb::WaitResponse {
            process: Some(info),
        }))
    }

    async fn get_process(
        &self,
        request: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::GetProcessResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.process_id;
        let info = shared.call(move |ctx| process::get(ctx, id)).await?;
        Ok(Response::new(pb::GetProcessResponse {
            process: Some(info),
        }))
    }

    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        let req = request.into_inner();
        let page = self.page(
            "ListProcesses",
            &req.r#loop,
            (),
            req.page_size,
            &req.page_token,
        )?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (processes, next) = shared.call(move |ctx| Ok(process::list(ctx, page))).await?;
        Ok(Response::new(pb::ListProcessesResponse {
            processes,
            next_page_token: page.next_token(next),
        }))
    }

    async fn read_output(
        &self,
        request: Request<Streaming<pb::ReadOutputRequest>>,
    ) -> Result<Response<Self::ReadOutputStream>, Status> {
        let mut inbound = request.into_inner();
        let first = opening(&mut inbound, "ReadOutputRequest").await?;
        let fd = output_fd(first.fd)?;
        let shared = self.daemon.registry.get(&first.r#loop)?;
        let id = first.process_id;
        let stream = shared.call(move |ctx| process::output(ctx, id, fd)).await?;
        let reader = stream.open(Some(first.from_offset)).map_err(Error::from)?;
        Ok(Response::new(serve_read_rpc(
            reader,
            first.credit_bytes,
            inbound,
            |m| Ok(m.credit_bytes),
            self.daemon.shutdown.clone(),
        )))
    }

    async fn open_fifo(
        &self,
        request: Request<pb::OpenFifoRequest>,
    ) -> Result<Response<pb::OpenFifoResponse>, Status> {
        let req = request.into_inner();
        let path = fifo::check_path(&req.path)?;
        let retain = req.retain_bytes.min(process::settings().max_retain_bytes);
        let retain = usize::try_from(retain).unwrap_or(usize::MAX);
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let write = req.write;
        let fifo_id = shared
            .call_later(move |ctx, tx| fifo::open_fifo(ctx, &path, write, retain, tx))
            .await?;
        Ok(Response::new(pb::OpenFifoResponse { fifo_id }))
    }

    async fn read_fifo(
        &self,
        request: Request<Streaming<pb::ReadFifoRequest>>,
    ) -> Result<Response<Self::ReadFifoStream>, Status> {
        let mut inbound = request.into_inner();
        let first = opening(&mut inbound, "ReadFifoRequest").await?;
        let shared = self.daemon.registry.get(&first.r#loop)?;
        let id = first.fifo_id;
        let stream = shared.call(move |ctx| fifo::stream(ctx, id)).await?;
        let reader = stream.open(Some(first.from_offset)).map_err(Error::from)?;
        Ok(Response::new(serve_read_rpc(
            reader,
            first.credit_bytes,
            inbound,
            |m| Ok(m.credit_bytes),
            self.daemon.shutdown.clone(),
        )))
    }

    async fn write_fifo(
        &self,
        request: Request<pb::WriteFifoRequest>,
    ) -> Result<Response<pb::WriteFifoResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, data, eof) = (req.fifo_id, req.data, req.eof);
        let buffered_bytes = shared
            .call(move |ctx| fifo::write(ctx, id, &data, eof))
            .await?;
        Ok(Response::new(pb::WriteFifoResponse { buffered_bytes }))
    }

    async fn close_fifo(
        &self,
        request: Request<pb::CloseFifoRequest>,
    ) -> Result<Response<pb::CloseFifoResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.fifo_id;
        shared.call(move |ctx| fifo::close(ctx, id)).await?;
        Ok(Response::new(pb::CloseFifoResponse {}))
    }
}

/// The first message of a read RPC (ReadOutput, ReadFifo), which opens its stream;
/// INVALID_ARGUMENT naming `what` if the client sent none.
async fn opening<T>(inbound: &mut Streaming<T>, what: &'static str) -> Result<T, Status> {
    let first = inbound.message().await?;
    Ok(first.ok_or_else(|| Error::invalid(what, "none (the first message opens the stream)"))?)
}
