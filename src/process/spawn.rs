//! Starting a child for [`EventLoop::subprocess_exec`](crate::EventLoop::subprocess_exec):
//! what its stdin, stdout and stderr become ([`Stdio`]), the rest of
//! [`SubprocessOptions`], and the checks made before anything is spawned.
//!
//! # Invariants
//! - `std::process::Command` spawns (posix_spawn/vfork when it can): no `pre_exec`
//!   closure is ever installed; a new process group is `CommandExt::process_group`.
//! - What `execve` would misread (a NUL byte in an argument, `cwd` or the environment, a
//!   `=` in a variable's name) is refused before spawning, naming the offender.
//! - Every pipe is made close-on-exec; the loop's ends are non-blocking, the child's are
//!   blocking. The parent's copies of the child's ends are closed right after the spawn,
//!   so end of file reaches the loop.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio as StdStdio};
use std::sync::Arc;

use mio::unix::pipe::{Receiver, Sender};

use super::ChildWatcher;
use crate::error::{Error, Result};

/// Where a child's stdin, stdout or stderr goes (asyncio's `subprocess.PIPE`, `DEVNULL`,
/// `None`, an fd, `STDOUT`).
#[derive(Debug, Default)]
pub enum Stdio {
    /// A pipe to the loop: data arrives in `pipe_data_received`, stdin is written with
    /// [`PipeTransport::write`](crate::PipeTransport::write). The default.
    #[default]
    Pipe,
    /// `/dev/null`.
    DevNull,
    /// The loop process's own descriptor (asyncio's `None`).
    Inherit,
    /// This descriptor. The transport takes it and closes the parent's copy after the
    /// spawn (asyncio leaves it to the caller: `dup` it first to keep it).
    Fd(OwnedFd),
    /// Only for stderr: the same place as stdout (asyncio's `subprocess.STDOUT`).
    Stdout,
}

/// How to start a child; the default is three pipes, the loop's environment and working
/// directory, the policy's child watcher.
#[derive(Default)]
pub struct SubprocessOptions {
    /// The child's stdin.
    pub stdin: Stdio,
    /// The child's stdout.
    pub stdout: Stdio,
    /// The child's stderr ([`Stdio::Stdout`] merges it into stdout).
    pub stderr: Stdio,
    /// The working directory; `None` inherits the loop process's.
    pub cwd: Option<PathBuf>,
    /// Start from an empty environment instead of the loop process's.
    pub env_clear: bool,
    /// Variables to set (after `env_clear`), in order.
    pub env: Vec<(OsString, OsString)>,
    /// `Some(0)`: a new process group led by the child; `Some(pgid)`: join that group
    /// (asyncio's `process_group`). Negative values are refused.
    pub process_group: Option<i32>,
    /// The watcher that reaps the child; `None`: the policy's.
    pub watcher: Option<Arc<dyn ChildWatcher>>,
}

impl std::fmt::Debug for SubprocessOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessOptions")
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("cwd", &self.cwd)
            .field("env_clear", &self.env_clear)
            .field("env", &self.env)
            .field("process_group", &self.process_group)
            .field("watcher", &self.watcher.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Refuses what `execve` would misread or `Command` would silently change.
pub(super) fn check_inputs(argv: &[&OsStr], options: &SubprocessOptions) -> Result<()> {
    if argv.is_empty() {
        return Err(invalid("argv", "[] (it needs at least the program)".into()));
    }
    for (i, arg) in argv.iter().enumerate() {
        if has_nul(arg) {
            return Err(invalid(
                "argument with a NUL byte",
                format!("argv[{i}] {arg:?}"),
            ));
        }
    }
    if let Some(cwd) = &options.cwd {
        if has_nul(cwd.as_os_str()) {
            return Err(invalid("cwd with a NUL byte", format!("{cwd:?}")));
        }
    }
    for (name, value) in &options.env {
        if has_nul(name) || has_nul(value) || name.is_empty() || name.as_bytes().contains(&b'=') {
            return Err(invalid(
                "environment variable",
                format!("{name:?}={value:?}"),
            ));
        }
    }
    if let Some(pgid) = options.process_group.filter(|&pgid| pgid < 0) {
        return Err(invalid("process group", pgid.to_string()));
    }
    for (what, stdio) in [("stdin", &options.stdin), ("stdout", &options.stdout)] {
        if matches!(stdio, Stdio::Stdout) {
            return Err(invalid(
                what,
                "STDOUT (only stderr can go to stdout)".into(),
            ));
        }
    }
    Ok(())
}

fn has_nul(s: &OsStr) -> bool {
    s.as_bytes().contains(&0)
}

pub(super) fn invalid(what: &'static str, value: String) -> Error {
    Error::InvalidArgument { what, value }
}

/// The loop's ends of the pipes made for a child: stdin, stdout, stderr.
#[derive(Default)]
pub(super) struct ParentEnds {
    pub(super) stdin: Option<Sender>,
    pub(super) stdout: Option<Receiver>,
    pub(super) stderr: Option<Receiver>,
}

pub(super) fn build_command(
    argv: &[&OsStr],
    options: SubprocessOptions,
) -> Result<(Command, ParentEnds)> {
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    if let Some(cwd) = &options.cwd {
        command.current_dir(cwd);
    }
    if options.env_clear {
        command.env_clear();
    }
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    if let Some(pgid) = options.process_group {
        command.process_group(pgid);
    }
    let mut ends = ParentEnds::default();
    let (stdin, tx) = child_stdin(options.stdin)?;
    ends.stdin = tx;
    let stdout_is_null = matches!(options.stdout, Stdio::DevNull);
    let (stdout, rx, stdout_fd) = child_output(options.stdout)?;
    ends.stdout = rx;
    let stderr = match options.stderr {
        Stdio::Stdout if stdout_is_null => StdStdio::null(),
        Stdio::Stdout => merged_stderr(stdout_fd.as_ref())?,
        other => {
            let (stderr, rx, fd) = child_output(other)?;
            ends.stderr = rx;
            fd.map_or(stderr, StdStdio::from)
        }
    };
    if let Some(fd) = stdout_fd {
        command.stdout(fd);
    } else {
        command.stdout(stdout);
    }
    command.stdin(stdin).stderr(stderr);
    Ok((command, ends))
}

/// The child's stdin, and the loop's end if it is a pipe.
fn child_stdin(stdio: Stdio) -> Result<(StdStdio, Option<Sender>)> {
    Ok(match stdio {
        Stdio::Pipe => {
            let (tx, rx) = new_pipe()?;
            rx.set_nonblocking(false).map_err(Error::io("fcntl"))?;
            (OwnedFd::from(rx).into(), Some(tx))
        }
        other => (simple_stdio(other), None),
    })
}

/// The child's stdout or stderr, the loop's end if it is a pipe, and the child's end as
/// a descriptor when stderr may need a copy of it (pipes and fds).
fn child_output(stdio: Stdio) -> Result<(StdStdio, Option<Receiver>, Option<OwnedFd>)> {
    Ok(match stdio {
        Stdio::Pipe => {
            let (tx, rx) = new_pipe()?;
            tx.set_nonblocking(false).map_err(Error::io("fcntl"))?;
            (StdStdio::null(), Some(rx), Some(OwnedFd::from(tx)))
        }
        Stdio::Fd(fd) => (StdStdio::null(), None, Some(fd)),
        other => (simple_stdio(other), None, None),
    })
}

/// stderr for `Stdio::Stdout`: a copy of stdout's descriptor (a pipe or an fd), else of
/// the loop process's stdout (stdout inherited).
fn merged_stderr(stdout_fd: Option<&OwnedFd>) -> Result<StdStdio> {
    let dup = match stdout_fd {
        Some(fd) => fd.try_clone(),
        None => io::stdout().as_fd().try_clone_to_owned(),
    };
    dup.map(StdStdio::from).map_err(Error::io("dup"))
}

fn simple_stdio(stdio: Stdio) -> StdStdio {
    match stdio {
        Stdio::DevNull => StdStdio::null(),
        Stdio::Fd(fd) => fd.into(),
        Stdio::Pipe | Stdio::Inherit | Stdio::Stdout => StdStdio::inherit(),
    }
}

/// A pipe with both ends non-blocking and close-on-exec.
fn new_pipe() -> Result<(Sender, Receiver)> {
    mio::unix::pipe::new().map_err(Error::io("pipe2"))
}

/// Starts the child. `Command` is dropped before returning, which closes the parent's
/// copies of the child's pipe ends, so end of file reaches the loop.
pub(super) fn spawn(mut command: Command, program: &OsStr) -> Result<u32> {
    let spawned = command.spawn();
    drop(command);
    match spawned {
        // Dropping `Child` neither waits nor kills: the watcher reaps it.
        Ok(child) => Ok(child.id()),
        Err(source) => Err(Error::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        }),
    }
}

/// Last resort when no watcher takes the child: kill it and wait for it here.
pub(super) fn kill_and_reap(pid: u32) {
    // SAFETY: plain syscalls on our own unreaped child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(argv: &[&str], options: SubprocessOptions) -> std::result::Result<(), String> {
        let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        check_inputs(&argv, &options).map_err(|err| err.to_string())
    }

    #[test]
    fn inputs_execve_would_misread_are_refused_by_name() {
        let env = |k: &str, v: &str| SubprocessOptions {
            env: vec![(k.into(), v.into())],
            ..Default::default()
        };
        let group = |pgid| SubprocessOptions {
            process_group: Some(pgid),
            ..Default::default()
        };
        let cases: [(&[&str], SubprocessOptions, Option<&str>); 10] = [
            (&["true"], group(0), None),
            (&["true"], group(-1), Some("invalid process group: -1")),
            (&["true"], Default::default(), None),
            (&[], Default::default(), Some("invalid argv")),
            (&["echo", "a\0b"], Default::default(), Some("argv[1]")),
            (&["\0"], Default::default(), Some("argv[0]")),
            (&["true"], env("A", "1"), None),
            (&["true"], env("A=B", "1"), Some("environment variable")),
            (&["true"], env("A", "x\0"), Some("environment variable")),
            (
                &["true"],
                SubprocessOptions {
                    cwd: Some("/tmp\0x".into()),
                    ..Default::default()
                },
                Some("cwd"),
            ),
        ];
        for (argv, options, want) in cases {
            match (check(argv, options), want) {
                (Ok(()), None) => {}
                (Err(msg), Some(want)) => assert!(msg.contains(want), "{argv:?}: {msg}"),
                (got, want) => panic!("{argv:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn only_stderr_may_go_to_stdout() {
        for (stdin, stdout, ok) in [
            (Stdio::Pipe, Stdio::Pipe, true),
            (Stdio::Stdout, Stdio::Pipe, false),
            (Stdio::Pipe, Stdio::Stdout, false),
        ] {
            let options = SubprocessOptions {
                stdin,
                stdout,
                stderr: Stdio::Stdout,
                ..Default::default()
            };
            assert_eq!(check(&["true"], options).is_ok(), ok);
        }
    }
}
