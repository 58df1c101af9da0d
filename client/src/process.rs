//! ProcessService: child processes run by the daemon (asyncio's `subprocess_exec`),
//! their stdin, signals, exit status and lossless output streams.
//!
//! # Invariants
//! - argv, cwd and environment are bytes, sent as they are: what [`Command::arg`] gets
//!   is what the child's `execve` gets.
//! - An [`ExitStatus`] carries asyncio's `returncode` (negative for a signal) and the
//!   shell's convention ([`ExitStatus::shell_code`]: 128 + N for signal N).
//! - [`Client::read_output`] returns a [`ByteReader`] that grants credit as it reads, so
//!   a reader that stops reading pauses the child's pipe instead of losing bytes.

use std::fmt;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;

use crate::byte_stream::{ByteReader, DEFAULT_WINDOW};
use crate::client::Client;
use crate::convert::{duration, required, system_time, to_wire_duration};
use crate::error::Result;
use crate::ids::ProcessId;
use crate::paging::{Page, PageRequest, all_pages, next_token};

/// What a child's standard stream is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// A pipe to the daemon (write stdin with [`Client::write_stdin`], read output with
    /// [`Client::read_output`]).
    Pipe,
    /// `/dev/null`.
    DevNull,
    /// Only for stderr: wherever stdout goes (asyncio's `subprocess.STDOUT`).
    Stdout,
}

impl Stdio {
    fn to_wire(self) -> i32 {
        let stdio = match self {
            Stdio::Pipe => pb::Stdio::Pipe,
            Stdio::DevNull => pb::Stdio::Devnull,
            Stdio::Stdout => pb::Stdio::Stdout,
        };
        stdio as i32
    }

    fn from_wire(raw: i32) -> Option<Stdio> {
        match pb::Stdio::try_from(raw) {
            Ok(pb::Stdio::Pipe) => Some(Stdio::Pipe),
            Ok(pb::Stdio::Devnull) => Some(Stdio::DevNull),
            Ok(pb::Stdio::Stdout) => Some(Stdio::Stdout),
            _ => None,
        }
    }
}

/// How to start a child: a builder in the manner of `std::process::Command`.
///
/// ```
/// use loopd_client::{Command, Stdio};
/// let cmd = Command::new("grep").args(["-c", "x"]).stdin(Stdio::Pipe).env("LANG", "C");
/// assert_eq!(cmd.argv()[0], b"grep");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    argv: Vec<Vec<u8>>,
    shell: Vec<u8>,
    cwd: Vec<u8>,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    stdio: [Option<Stdio>; 3],
    new_process_group: Option<bool>,
    retain_output_bytes: u64,
    hold_output: bool,
}

impl Command {
    /// Runs `program` (a path, or a name looked up in the child's `PATH`).
    pub fn new(program: impl Into<Vec<u8>>) -> Command {
        Command {
            argv: vec![program.into()],
            ..Command::default()
        }
    }

    /// Runs `argv` as given (argv[0] is the program).
    pub fn from_argv<A: Into<Vec<u8>>>(argv: impl IntoIterator<Item = A>) -> Command {
        Command {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Command::default()
        }
    }

    /// Runs `cmd` with `/bin/sh -c`; the daemon refuses it (FAILED_PRECONDITION) unless
    /// its config allows shells.
    pub fn shell(cmd: impl Into<Vec<u8>>) -> Command {
        Command {
            shell: cmd.into(),
            ..Command::default()
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<Vec<u8>>) -> Command {
        self.argv.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<A: Into<Vec<u8>>>(mut self, args: impl IntoIterator<Item = A>) -> Command {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory.
    pub fn cwd(mut self, dir: impl Into<Vec<u8>>) -> Command {
        self.cwd = dir.into();
        self
    }

    /// Sets a variable (on top of the daemon's allowlist, e.g. PATH, HOME, LANG).
    pub fn env(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Command {
        self.env.push((name.into(), value.into()));
        self
    }

    /// stdin (default: /dev/null).
    pub fn stdin(mut self, stdio: Stdio) -> Command {
        self.stdio[0] = Some(stdio);
        self
    }

    /// stdout (default: a pipe).
    pub fn stdout(mut self, stdio: Stdio) -> Command {
        self.stdio[1] = Some(stdio);
        self
    }

    /// stderr (default: a pipe; [`Stdio::Stdout`] merges it into stdout).
    pub fn stderr(mut self, stdio: Stdio) -> Command {
        self.stdio[2] = Some(stdio);
        self
    }

    /// Whether the child leads its own process group (default: yes).
    pub fn new_process_group(mut self, yes: bool) -> Command {
        self.new_process_group = Some(yes);
        self
    }

    /// Output bytes kept per stream for late readers (0: the daemon's default).
    pub fn retain_output_bytes(mut self, bytes: u64) -> Command {
        self.retain_output_bytes = bytes;
        self
    }

    /// Keep the output pipes paused until a reader attaches, so nothing is dropped.
    pub fn hold_output_until_read(mut self, yes: bool) -> Command {
        self.hold_output = yes;
        self
    }

    /// The argv (empty for a shell command).
    pub fn argv(&self) -> &[Vec<u8>] {
        &self.argv
    }

    pub(crate) fn to_wire(&self) -> pb::ProcessSpec {
        let stdio = |i: usize| self.stdio[i].map_or(0, Stdio::to_wire);
        pb::ProcessSpec {
            argv: self.argv.clone(),
            shell: self.shell.clone(),
            cwd: self.cwd.clone(),
            env: self
                .env
                .iter()
                .map(|(name, value)| pb::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            stdin: stdio(0),
            stdout: stdio(1),
            stderr: stdio(2),
            new_process_group: self.new_process_group,
            retain_output_bytes: self.retain_output_bytes,
            hold_output_until_read: self.hold_output,
        }
    }

    pub(crate) fn from_wire(spec: pb::ProcessSpec) -> Command {
        Command {
            argv: spec.argv,
            shell: spec.shell,
            cwd: spec.cwd,
            env: spec.env.into_iter().map(|v| (v.name, v.value)).collect(),
            stdio: [spec.stdin, spec.stdout, spec.stderr].map(Stdio::from_wire),
            new_process_group: spec.new_process_group,
            retain_output_bytes: spec.retain_output_bytes,
            hold_output: spec.hold_output_until_read,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// asyncio's returncode: the exit code, or -N when signal N killed it.
    pub returncode: i32,
    /// From the spawn to the exit status being known.
    pub duration: Duration,
}

impl ExitStatus {
    /// The exit code, if the process exited by itself.
    pub fn code(&self) -> Option<i32> {
        (self.returncode >= 0).then_some(self.returncode)
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        (self.returncode < 0).then_some(-self.returncode)
    }

    /// The status a shell reports: the code, or 128 + N for signal N.
    pub fn shell_code(&self) -> i32 {
        self.signal().map_or(self.returncode, |sig| 128 + sig)
    }

    fn from_wire(e: pb::ExitStatus) -> Result<ExitStatus> {
        Ok(ExitStatus {
            returncode: e.returncode,
            duration: duration(e.duration, "ExitStatus.duration")?,
        })
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal() {
            Some(sig) => write!(f, "killed by signal {sig}"),
            None => write!(f, "exit code {}", self.returncode),
        }
    }
}

/// Running, or exited with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running, or reaped with output still flowing.
    Running,
    /// Exited and its output reached end of file.
    Exited(ExitStatus),
    /// A state this client does not know, with its wire value.
    Unknown(i32),
}

/// One process, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// loopd's id of the process.
    pub process_id: ProcessId,
    /// The loop that owns it.
    pub loop_name: String,
    /// Its operating system pid.
    pub pid: u32,
    /// Its process group when it leads one; 0 otherwise.
    pub pgid: u32,
    /// The argv it was started with.
    pub argv: Vec<Vec<u8>>,
    /// Running or exited.
    pub state: ProcessState,
    /// When it was started.
    pub started_at: Option<SystemTime>,
    /// Bytes it wrote to stdout so far.
    pub stdout_bytes: u64,
    /// Bytes it wrote to stderr so far.
    pub stderr_bytes: u64,
    /// Output bytes kept per stream for late readers.
    pub retain_output_bytes: u64,
    /// Whether stdin is a pipe still open.
    pub stdin_open: bool,
    /// The uid of the caller that started it.
    pub creator_uid: u32,
}

impl ProcessInfo {
    /// The exit status, once exited.
    pub fn exit(&self) -> Option<ExitStatus> {
        match self.state {
            ProcessState::Exited(status) => Some(status),
            _ => None,
        }
    }

    fn from_wire(p: pb::ProcessInfo) -> Result<ProcessInfo> {
        let state = match pb::ProcessState::try_from(p.state) {
            Ok(pb::ProcessState::Running) => ProcessState::Running,
            Ok(pb::ProcessState::Exited) => {
                let exit = required(p.exit, "ProcessInfo.exit")?;
                ProcessState::Exited(ExitStatus::from_wire(exit)?)
            }
            _ => ProcessState::Unknown(p.state),
        };
        Ok(ProcessInfo {
            process_id: ProcessId(p.process_id),
            loop_name: p.r#loop,
            pid: p.pid,
            pgid: p.pgid,
            argv: p.argv,
            state,
            started_at: system_time(p.started_at),
            stdout_bytes: p.stdout_bytes,
            stderr_bytes: p.stderr_bytes,
            retain_output_bytes: p.retain_output_bytes,
            stdin_open: p.stdin_open,
            creator_uid: p.creator_uid,
        })
    }
}

fn process(p: Option<pb::ProcessInfo>) -> Result<ProcessInfo> {
    ProcessInfo::from_wire(required(p, "process")?)
}

/// A child's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFd {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl OutputFd {
    fn to_wire(self) -> i32 {
        match self {
            OutputFd::Stdout => pb::OutputFd::Stdout as i32,
            OutputFd::Stderr => pb::OutputFd::Stderr as i32,
        }
    }
}

impl Client {
    /// Starts a process on a loop (asyncio's `subprocess_exec`, or `subprocess_shell`
    /// for [`Command::shell`]). Fails with INVALID_ARGUMENT (bad argv, cwd, env or
    /// stdio, naming it), FAILED_PRECONDITION (shell disabled, loop closed), NOT_FOUND
    /// (loop, or a program that does not exist), PERMISSION_DENIED, RESOURCE_EXHAUSTED.
    pub async fn spawn(&self, loop_name: &str, command: &Command) -> Result<ProcessInfo> {
        let request = pb::SpawnRequest {
            r#loop: loop_name.to_owned(),
            spec: Some(command.to_wire()),
        };
        let r = self.process.clone().spawn(request).await?.into_inner();
        process(r.process)
    }

    /// Queues `data` for the child's stdin, then closes it if `eof`; returns the bytes
    /// still queued. Fails with NOT_FOUND, or FAILED_PRECONDITION if stdin is not a pipe
    /// or is closed.
    pub async fn write_stdin(
        &self,
        loop_name: &str,
        id: ProcessId,
        data: impl Into<Vec<u8>>,
        eof: bool,
    ) -> Result<u64> {
        let request = pb::WriteStdinRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
            data: data.into(),
            eof,
        };
        let r = self
            .process
            .clone()
            .write_stdin(request)
            .await?
            .into_inner();
        Ok(r.buffered_bytes)
    }

    /// Closes the child's stdin once flushed (asyncio's `write_eof`). Fails with
    /// NOT_FOUND, or FAILED_PRECONDITION if stdin is not a pipe.
    pub async fn close_stdin(&self, loop_name: &str, id: ProcessId) -> Result<()> {
        let request = pb::CloseStdinRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
        };
        self.process.clone().close_stdin(request).await?;
        Ok(())
    }

    /// Sends `signal` (a number or a name) to the process, or its group; `false` if it
    /// had already exited. Fails with INVALID_ARGUMENT (unknown signal) or NOT_FOUND.
    pub async fn send_signal(
        &self,
        loop_name: &str,
        id: ProcessId,
        signal: &str,
        to_group: bool,
    ) -> Result<bool> {
        let request = pb::SendSignalRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
            signal: signal.to_owned(),
            to_group,
        };
        let r = self
            .process
            .clone()
            .send_signal(request)
            .await?
            .into_inner();
        Ok(r.delivered)
    }

    /// SIGTERM to the process's group (or the process); `false` if it had exited.
    /// Fails with NOT_FOUND.
    pub async fn terminate(&self, loop_name: &str, id: ProcessId) -> Result<bool> {
        let request = pb::TerminateRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
        };
        let r = self.process.clone().terminate(request).await?.into_inner();
        Ok(r.delivered)
    }

    /// SIGKILL to the process's group (or the process); `false` if it had exited.
    /// Fails with NOT_FOUND.
    pub async fn kill(&self, loop_name: &str, id: ProcessId) -> Result<bool> {
        let request = pb::KillRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
        };
        let r = self.process.clone().kill(request).await?.into_inner();
        Ok(r.delivered)
    }

    /// Waits until the process exited and its output ended (asyncio's
    /// `Process.wait()`); with a `timeout`, returns it still running when that runs out.
    /// Fails with NOT_FOUND, FAILED_PRECONDITION (loop closed), UNAVAILABLE (shutdown).
    pub async fn wait_process(
        &self,
        loop_name: &str,
        id: ProcessId,
        timeout: Option<Duration>,
    ) -> Result<ProcessInfo> {
        let request = pb::WaitRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
            timeout: timeout.map(to_wire_duration).transpose()?,
        };
        let r = self.process.clone().wait(request).await?.into_inner();
        process(r.process)
    }

    /// Describes a process. Fails with NOT_FOUND.
    pub async fn get_process(&self, loop_name: &str, id: ProcessId) -> Result<ProcessInfo> {
        let request = pb::GetProcessRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
        };
        let r = self
            .process
            .clone()
            .get_process(request)
            .await?
            .into_inner();
        process(r.process)
    }

    /// Lists a loop's processes by ascending id, following every page. Fails with
    /// NOT_FOUND for an unknown loop.
    pub async fn list_processes(&self, loop_name: &str) -> Result<Vec<ProcessInfo>> {
        all_pages(0, move |page| self.list_processes_page(loop_name, page)).await
    }

    /// Lists one page of a loop's processes by ascending id. Fails with NOT_FOUND for
    /// an unknown loop, INVALID_ARGUMENT for a token from another query.
    pub async fn list_processes_page(
        &self,
        loop_name: &str,
        page: PageRequest,
    ) -> Result<Page<ProcessInfo>> {
        let request = pb::ListProcessesRequest {
            r#loop: loop_name.to_owned(),
            page_size: page.page_size,
            page_token: page.token(),
        };
        let r = self
            .process
            .clone()
            .list_processes(request)
            .await?
            .into_inner();
        Ok(Page {
            items: r
                .processes
                .into_iter()
                .map(ProcessInfo::from_wire)
                .collect::<Result<_>>()?,
            next_page_token: next_token(r.next_page_token),
        })
    }

    /// Reads a process's stdout or stderr losslessly from `from_offset`, granting credit
    /// as it goes (see [`ByteReader`]). Fails with NOT_FOUND, FAILED_PRECONDITION (not a
    /// pipe), OUT_OF_RANGE (an offset no longer retained, or beyond the output).
    pub async fn read_output(
        &self,
        loop_name: &str,
        id: ProcessId,
        fd: OutputFd,
        from_offset: u64,
    ) -> Result<ByteReader> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let open = pb::ReadOutputRequest {
            r#loop: loop_name.to_owned(),
            process_id: id.0,
            fd: fd.to_wire(),
            from_offset,
            credit_bytes: 0,
        };
        // The receiver is alive: it is dropped only with the request stream below.
        let _ = tx.send(open);
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let chunks = self
            .process
            .clone()
            .read_output(requests)
            .await?
            .into_inner();
        let grant = move |credit_bytes| {
            let credit = pb::ReadOutputRequest {
                credit_bytes,
                ..Default::default()
            };
            tx.send(credit).is_ok()
        };
        Ok(ByteReader::new(chunks, DEFAULT_WINDOW, grant))
    }

    /// Reads a whole output stream from offset 0 into memory (for small outputs).
    /// Fails as [`read_output`](Self::read_output), or with the stream's error.
    pub async fn read_output_to_end(
        &self,
        loop_name: &str,
        id: ProcessId,
        fd: OutputFd,
    ) -> Result<Vec<u8>> {
        let mut reader = self.read_output(loop_name, id, fd, 0).await?;
        let mut out = Vec::new();
        while let Some(chunk) = reader.next().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}

/// Named pipes (FIFOs) opened by the daemon.
impl Client {
    /// Opens the FIFO at `path` on a loop, for writing or for reading (then
    /// `retain_bytes` already read stay available to late readers); returns its id.
    /// Fails with INVALID_ARGUMENT (empty path, NUL byte, not a FIFO), NOT_FOUND,
    /// PERMISSION_DENIED, or FAILED_PRECONDITION for a writer with no reader (ENXIO).
    pub async fn open_fifo(
        &self,
        loop_name: &str,
        path: impl Into<Vec<u8>>,
        write: bool,
        retain_bytes: u64,
    ) -> Result<u64> {
        let request = pb::OpenFifoRequest {
            r#loop: loop_name.to_owned(),
            path: path.into(),
            write,
            retain_bytes,
        };
        let r = self.process.clone().open_fifo(request).await?.into_inner();
        Ok(r.fifo_id)
    }

    /// Reads a FIFO opened for reading, losslessly from `from_offset` (see
    /// [`read_output`](Self::read_output)). Fails with NOT_FOUND, FAILED_PRECONDITION
    /// (opened for writing), OUT_OF_RANGE.
    pub async fn read_fifo(
        &self,
        loop_name: &str,
        fifo_id: u64,
        from_offset: u64,
    ) -> Result<ByteReader> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let open = pb::ReadFifoRequest {
            r#loop: loop_name.to_owned(),
            fifo_id,
            from_offset,
            credit_bytes: 0,
        };
        let _ = tx.send(open);
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let chunks = self.process.clone().read_fifo(requests).await?.into_inner();
        let grant = move |credit_bytes| {
            let credit = pb::ReadFifoRequest {
                credit_bytes,
                ..Default::default()
            };
            tx.send(credit).is_ok()
        };
        Ok(ByteReader::new(chunks, DEFAULT_WINDOW, grant))
    }

    /// Writes to a FIFO opened for writing, closing it once flushed if `eof`; returns
    /// the bytes still queued. Fails with NOT_FOUND or FAILED_PRECONDITION (opened for
    /// reading, or closed).
    pub async fn write_fifo(
        &self,
        loop_name: &str,
        fifo_id: u64,
        data: impl Into<Vec<u8>>,
        eof: bool,
    ) -> Result<u64> {
        let request = pb::WriteFifoRequest {
            r#loop: loop_name.to_owned(),
            fifo_id,
            data: data.into(),
            eof,
        };
        let r = self.process.clone().write_fifo(request).await?.into_inner();
        Ok(r.buffered_bytes)
    }

    /// Closes a FIFO and forgets it: readers see their stream end, queued writes are
    /// flushed first. Fails with NOT_FOUND (unknown, or already closed).
    pub async fn close_fifo(&self, loop_name: &str, fifo_id: u64) -> Result<()> {
        let request = pb::CloseFifoRequest {
            r#loop: loop_name.to_owned(),
            fifo_id,
        };
        self.process.clone().close_fifo(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_asyncio_and_as_a_shell() {
        let cases = [
            (0, Some(0), None, 0),
            (3, Some(3), None, 3),
            (-9, None, Some(9), 137),
        ];
        for (returncode, code, signal, shell) in cases {
            let status = ExitStatus {
                returncode,
                duration: Duration::ZERO,
            };
            assert_eq!(status.code(), code);
            assert_eq!(status.signal(), signal);
            assert_eq!(status.shell_code(), shell);
        }
    }

    #[test]
    fn commands_round_trip_the_wire() {
        let command = Command::new("ls")
            .args(["-l", "a b"])
            .cwd("/tmp")
            .env("A", "1")
            .stdin(Stdio::Pipe)
            .stderr(Stdio::Stdout)
            .new_process_group(false)
            .retain_output_bytes(7)
            .hold_output_until_read(true);
        assert_eq!(Command::from_wire(command.to_wire()), command);
        assert_eq!(command.to_wire().stdout, 0, "unset stdio is the default");
    }
}
