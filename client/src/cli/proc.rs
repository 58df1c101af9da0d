//! `loopctl proc ...`: processes run by the daemon.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::{OutputFd, ProcessId, ProcessInfo, ProcessState, Stdio, all_pages};
use serde_json::{Value, json};

use super::output::{self, Table};
use super::run::CommandArgs;
use super::{Ctx, LoopArg, PageArg, args};

/// Start, inspect, signal and wait for processes run by the daemon.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  id=$(loopctl proc spawn -- sleep 30)
  loopctl proc ls
  loopctl proc kill \"$id\" && loopctl proc wait \"$id\"")]
pub enum ProcCommand {
    /// Start a process; prints its id.
    #[command(
        after_help = "Examples:\n  loopctl proc spawn -- sleep 30\n  loopctl proc spawn --stdin -- cat"
    )]
    Spawn(SpawnArgs),
    /// List the loop's processes.
    #[command(after_help = "Examples:\n  loopctl proc ls\n  loopctl --json proc ls | jq .pid")]
    Ls(LsArgs),
    /// Describe a process.
    #[command(after_help = "Examples:\n  loopctl proc show 7")]
    Show(IdArgs),
    /// Print a process's retained output; with --follow, until it ends.
    #[command(
        after_help = "Examples:\n  loopctl proc logs 7\n  loopctl proc logs 7 --stderr --follow"
    )]
    Logs(LogsArgs),
    /// Write to a process's stdin.
    #[command(after_help = "Examples:\n  loopctl proc write 7 'hello' --newline --eof")]
    Write(WriteArgs),
    /// Send a signal (a number or a name) to a process.
    #[command(
        after_help = "Examples:\n  loopctl proc signal 7 USR1\n  loopctl proc signal 7 15 --group"
    )]
    Signal(SignalArgs),
    /// SIGKILL a process's group (or the process).
    #[command(after_help = "Examples:\n  loopctl proc kill 7")]
    Kill(IdArgs),
    /// Wait for a process to exit; exits with its status (128 + N for signal N).
    #[command(after_help = "Examples:\n  loopctl proc wait 7\n  loopctl proc wait 7 --timeout 5s")]
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    #[command(flatten)]
    what: CommandArgs,
    /// Give the child a stdin pipe (write with `proc write`); default /dev/null.
    #[arg(long)]
    stdin: bool,
    /// Merge stderr into stdout.
    #[arg(long)]
    merge_stderr: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    page: PageArg,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The process's id, as printed by `proc spawn`.
    id: ProcessId,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The process's id.
    id: ProcessId,
    /// Read stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// Keep printing until the output ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The process's id.
    id: ProcessId,
    /// The text to write.
    data: String,
    /// Append a newline.
    #[arg(long)]
    newline: bool,
    /// Close stdin after writing.
    #[arg(long)]
    eof: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The process's id.
    id: ProcessId,
    /// The signal: a number or a name (TERM, SIGUSR1, 9).
    signal: String,
    /// Signal the process's whole group.
    #[arg(long)]
    group: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The process's id.
    id: ProcessId,
    /// Longest wait, e.g. 5s; then print it running and exit 0.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl ProcCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        match self {
            ProcCommand::Spawn(a) => {
                let mut cmd = a.what.to_command();
                if a.stdin {
                    cmd = cmd.stdin(Stdio::Pipe);
                }
                if a.merge_stderr {
                    cmd = cmd.stderr(Stdio::Stdout);
                }
                let info = client.spawn(&a.r#loop.name, &cmd).await?;
                if ctx.out.json {
                    return Ok(ctx.out.json_line(&to_json(&info))?);
                }
                Ok(ctx.out.line(&info.process_id.to_string())?)
            }
            ProcCommand::Ls(a) => {
                let (client, name) = (&client, a.r#loop.name.as_str());
                let procs = all_pages(a.page.page_size, move |page| {
                    client.list_processes_page(name, page)
                })
                .await?;
                let mut table = Table::new(&["ID", "PID", "STATE", "STARTED", "ARGV"]);
                for p in &procs {
                    table.row(vec![
                        p.process_id.to_string(),
                        p.pid.to_string(),
                        state(p),
                        output::time(p.started_at),
                        argv(p),
                    ]);
                }
                Ok(ctx.out.rows(table, procs.iter().map(to_json))?)
            }
            ProcCommand::Show(a) => {
                let p = client.get_process(&a.r#loop.name, a.id).await?;
                show(ctx, &p)
            }
            ProcCommand::Logs(a) => logs(ctx, &client, a).await,
            ProcCommand::Write(a) => {
                let mut data = a.data.into_bytes();
                if a.newline {
                    data.push(b'\n');
                }
                client
                    .write_stdin(&a.r#loop.name, a.id, data, a.eof)
                    .await?;
                Ok(())
            }
            ProcCommand::Signal(a) => {
                let sent = client
                    .send_signal(&a.r#loop.name, a.id, &a.signal, a.group)
                    .await?;
                delivered(ctx, sent)
            }
            ProcCommand::Kill(a) => {
                let sent = client.kill(&a.r#loop.name, a.id).await?;
                delivered(ctx, sent)
            }
            ProcCommand::Wait(a) => {
                let p = client.wait_process(&a.r#loop.name, a.id, a.timeout).await?;
                show(ctx, &p)?;
                match p.exit().map(|s| s.shell_code()) {
                    Some(code) if code != 0 => {
                        Err(super::ExitWith(u8::try_from(code).unwrap_or(1)).into())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

fn delivered(ctx: &mut Ctx<'_>, sent: bool) -> Result<()> {
    if ctx.out.json {
        return Ok(ctx.out.json_line(&json!({ "delivered": sent }))?);
    }
    let text = if sent {
        "sent"
    } else {
        "not sent: the process has exited"
    };
    Ok(ctx.out.line(text)?)
}

/// Prints the retained output (all of it with --follow, until the stream ends).
async fn logs(ctx: &mut Ctx<'_>, client: &loopd_client::Client, a: LogsArgs) -> Result<()> {
    let fd = if a.stderr {
        OutputFd::Stderr
    } else {
        OutputFd::Stdout
    };
    let info = client.get_process(&a.r#loop.name, a.id).await?;
    let written = if a.stderr {
        info.stderr_bytes
    } else {
        info.stdout_bytes
    };
    let from = written.saturating_sub(info.retain_output_bytes);
    let mut reader = client.read_output(&a.r#loop.name, a.id, fd, from).await?;
    ctx.out.flush()?;
    let mut out = io::stdout().lock();
    let mut at = from;
    while a.follow || at < written {
        let Some(chunk) = reader.next().await? else {
            break;
        };
        let keep = if a.follow {
            chunk.data.len()
        } else {
            chunk.data.len().min((written - at) as usize)
        };
        out.write_all(&chunk.data[..keep])?;
        out.flush()?;
        at += chunk.data.len() as u64;
        if chunk.end.is_some() {
            break;
        }
    }
    Ok(())
}

fn state(p: &ProcessInfo) -> String {
    match p.state {
        ProcessState::Running => "running".into(),
        ProcessState::Exited(status) => status.to_string(),
        ProcessState::Unknown(v) => format!("unknown({v})"),
    }
}

fn argv(p: &ProcessInfo) -> String {
    let words: Vec<String> = p
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    words.join(" ")
}

fn show(ctx: &mut Ctx<'_>, p: &ProcessInfo) -> Result<()> {
    if ctx.out.json {
        return Ok(ctx.out.json_line(&to_json(p))?);
    }
    let exit = p.exit();
    Ok(ctx.out.pairs(&[
        ("id", p.process_id.to_string()),
        ("loop", p.loop_name.clone()),
        ("pid", p.pid.to_string()),
        ("pgid", p.pgid.to_string()),
        ("argv", argv(p)),
        ("state", state(p)),
        (
            "returncode",
            exit.map_or("-".into(), |s| s.returncode.to_string()),
        ),
        (
            "duration",
            exit.map_or("-".into(), |s| output::duration(s.duration)),
        ),
        ("started", output::time(p.started_at)),
        ("stdout bytes", p.stdout_bytes.to_string()),
        ("stderr bytes", p.stderr_bytes.to_string()),
        ("stdin open", p.stdin_open.to_string()),
    ])?)
}

fn to_json(p: &ProcessInfo) -> Value {
    let exit = p.exit();
    json!({
        "process_id": p.process_id.0,
        "loop": p.loop_name,
        "pid": p.pid,
        "pgid": p.pgid,
        "argv": p.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
        "state": if exit.is_some() { "exited" } else { "running" },
        "returncode": exit.map(|s| s.returncode),
        "duration": exit.map(|s| output::secs(s.duration)),
        "started_at": output::time_json(p.started_at),
        "stdout_bytes": p.stdout_bytes,
        "stderr_bytes": p.stderr_bytes,
        "stdin_open": p.stdin_open,
    })
}
