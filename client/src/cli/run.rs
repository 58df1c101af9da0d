//! `loopctl run -- CMD ARGS...`: runs a command in the daemon as if it ran here.
//!
//! # Invariants
//! - stdout and stderr are copied byte for byte from lossless streams (the child's
//!   output is held until they attach), each to loopctl's own stdout and stderr.
//! - loopctl's stdin is forwarded to the child's, which is closed at end of file. It is
//!   read on a plain thread, so a terminal that never sends EOF cannot delay the exit.
//! - loopctl exits with the child's status: its exit code, or 128 + N for signal N.
//! - A closed stdout (`loopctl run -- yes | head`) sends SIGPIPE to the child, as a
//!   pipeline would; the rest of its output is discarded.
//! - SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to loopctl (Ctrl-C,
//!   Ctrl-\\, `kill`) go to the child's process group, as a terminal sends Ctrl-C to its
//!   foreground job, and loopctl goes on until the child exits: a child that traps the
//!   signal finishes its way, and loopctl never leaves it running behind it.

use std::io::{self, Read, Write};

use anyhow::Result;
use clap::Args;
use loopd_client::{ByteReader, Client, Command, OutputFd, ProcessId, Stdio};
use tokio::signal::unix::Signal;

use super::{Ctx, ExitWith, LoopArg};

/// Run a command in the daemon, with its output here and exiting with its status.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl run -- uname -a
  echo hello | loopctl run -- tr a-z A-Z
  loopctl run --cwd /tmp --env LANG=C -- ls -l
  loopctl run --shell -- 'echo $PATH | tr : \"\\n\"'   (needs [process] allow_shell)

Ctrl-C and the signals SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
loopctl go to the command's process group; loopctl exits when the command does, with
its status (128+N for signal N).")]
pub struct RunArgs {
    #[command(flatten)]
    what: CommandArgs,
    /// Do not forward stdin: the child reads /dev/null.
    #[arg(long)]
    no_stdin: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

/// What to run and how (`run` and `proc spawn`): the words after `--`, the shell, the
/// child's working directory and environment.
#[derive(Debug, Args)]
pub struct CommandArgs {
    /// Run the command with /bin/sh -c (the daemon must allow shells); the words after
    /// `--` are joined with spaces.
    #[arg(long)]
    shell: bool,
    /// The child's working directory.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// A variable for the child, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = env_pair)]
    env: Vec<(String, String)>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl CommandArgs {
    /// The command these arguments ask for.
    pub fn to_command(&self) -> Command {
        command(self.shell, &self.command, self.cwd.as_deref(), &self.env)
    }
}

/// Parses `NAME=VALUE`.
fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// The command a `run`/`proc spawn` asks for.
fn command(shell: bool, words: &[String], cwd: Option<&str>, env: &[(String, String)]) -> Command {
    let mut command = if shell {
        Command::shell(words.join(" "))
    } else {
        Command::from_argv(words.iter().map(String::as_str))
    };
    if let Some(cwd) = cwd {
        command = command.cwd(cwd);
    }
    for (name, value) in env {
        command = command.env(name.as_str(), value.as_str());
    }
    command
}

impl RunArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let stdin = if self.no_stdin {
            Stdio::DevNull
        } else {
            Stdio::Pipe
        };
        let cmd = self
            .what
            .to_command()
            .stdin(stdin)
            .hold_output_until_read(true);
        let loop_name = self.r#loop.name;
        // Listening before the spawn: a Ctrl-C during it waits for the child's id.
        let signals = listen_for_signals()?;
        let info = client.spawn(&loop_name, &cmd).await?;
        let id = info.process_id;
        let stdout = client
            .read_output(&loop_name, id, OutputFd::Stdout, 0)
            .await?;
        let stderr = client
            .read_output(&loop_name, id, OutputFd::Stderr, 0)
            .await?;
        if !self.no_stdin {
            forward_stdin(client.clone(), loop_name.clone(), id);
        }
        forward_signals(signals, &client, &loop_name, id);
        let out = copy(stdout, io::stdout(), Some((&client, &loop_name, id)));
        let err = copy(stderr, io::stderr(), None);
        let (out, err) = tokio::join!(out, err);
        out?;
        err?;
        let done = client.wait_process(&loop_name, id, None).await?;
        let code = done.exit().map_or(1, |status| status.shell_code());
        if code == 0 {
            return Ok(());
        }
        Err(ExitWith(u8::try_from(code).unwrap_or(1)).into())
    }
}

/// Copies a stream to `w`. On a broken pipe, the child (if given) gets SIGPIPE and the
/// rest is read and dropped.
async fn copy(
    mut reader: ByteReader,
    mut w: impl Write,
    on_broken: Option<(&Client, &str, ProcessId)>,
) -> Result<()> {
    let mut broken = false;
    while let Some(chunk) = reader.next().await? {
        if broken || chunk.data.is_empty() {
            continue;
        }
        let written = w.write_all(&chunk.data).and_then(|()| w.flush());
        match written {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                broken = true;
                if let Some((client, loop_name, id)) = on_broken {
                    let _ = client.send_signal(loop_name, id, "SIGPIPE", false).await;
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Reads stdin on its own thread and writes it to the child; closes the child's stdin
/// at end of file. Stops quietly once the child's stdin is closed.
fn forward_stdin(client: Client, loop_name: String, id: ProcessId) {
    let mut chunks = stdin_chunks();
    tokio::spawn(async move {
        while let Some(Ok(data)) = chunks.recv().await {
            if client
                .write_stdin(&loop_name, id, data, false)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = client.close_stdin(&loop_name, id).await;
    });
}

/// Reads stdin on a plain thread, so that a terminal that never sends end of file cannot
/// hold up loopctl's exit: each read's bytes, a read error as the last item, and the
/// channel closed at end of file.
pub fn stdin_chunks() -> tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(err) => Err(err),
            };
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// The signals `loopctl run` passes on to the child's process group.
fn forwarded_signals() -> [(tokio::signal::unix::SignalKind, &'static str); 6] {
    use tokio::signal::unix::SignalKind;
    [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ]
}

/// Takes over [`forwarded_signals`] for this process: from now on they queue up here
/// instead of ending loopctl. Fails only if a handler cannot be installed.
fn listen_for_signals() -> Result<Vec<(Signal, &'static str)>> {
    forwarded_signals()
        .into_iter()
        .map(|(kind, name)| Ok((tokio::signal::unix::signal(kind)?, name)))
        .collect()
}

/// Sends each signal that arrives on `signals` to the child's process group.
fn forward_signals(
    signals: Vec<(Signal, &'static str)>,
    client: &Client,
    loop_name: &str,
    id: ProcessId,
) {
    for (mut arrivals, name) in signals {
        let (client, loop_name) = (client.clone(), loop_name.to_owned());
        tokio::spawn(async move {
            while arrivals.recv().await.is_some() {
                if let Err(err) = client.send_signal(&loop_name, id, name, true).await {
                    eprintln!("loopctl: forwarding {name} to process {}: {err:#}", id.0);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_need_a_name_and_an_equals_sign() {
        assert_eq!(env_pair("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(env_pair("A="), Ok(("A".into(), String::new())));
        assert_eq!(env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(env_pair("=1").unwrap_err().contains("\"=1\""));
        assert!(env_pair("A").is_err());
    }

    #[test]
    fn shell_words_are_joined() {
        let words = ["echo".to_owned(), "$HOME".to_owned()];
        let cmd = command(true, &words, None, &[]);
        assert!(cmd.argv().is_empty());
        let cmd = command(false, &words, Some("/tmp"), &[("A".into(), "1".into())]);
        assert_eq!(cmd.argv(), [b"echo".to_vec(), b"$HOME".to_vec()]);
    }
}
