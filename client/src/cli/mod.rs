//! loopctl's command line: parsing, dispatch, and exit statuses.
//!
//! # Invariants
//! - Exit status 0 on success, 1 when a command fails (the message on stderr starts
//!   with `loopctl: ` and, for a daemon's answer, names its gRPC code), 2 for bad usage
//!   (clap's own errors, which name the bad value); `run` and `proc wait` exit with the
//!   child's status instead (128 + N for signal N).
//! - A closed stdout (`loopctl events --follow | head -1`) exits 0 quietly.
//! - Only commands that need the daemon connect to it (`completions` does not).

mod args;
mod completions;
mod conn;
mod dns;
mod events;
mod fifo;
mod future;
mod loops;
mod metrics;
mod output;
mod proc;
mod run;
mod sendfile;
mod server;
mod signal;
mod status;
mod time;
mod timer;
mod udp;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use loopd_client::{Client, Target};

use output::Out;

/// Drives the loops of a loopd daemon: loops, timers, futures, events, metrics.
#[derive(Debug, Parser)]
#[command(name = "loopctl", version, about, propagate_version = true)]
#[command(after_help = "\
Examples:
  loopctl status
  loopctl timer add --in 1.5s --tag hello
  loopctl events --follow --kind timer_fired
  loopctl --json loop ls | jq .name
  LOOPD_SOCKET=/tmp/loopd.sock loopctl metrics")]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// The daemon's socket: a path or unix:PATH. Default: $XDG_RUNTIME_DIR/loopd/loopd.sock,
    /// else /run/loopd/loopd.sock.
    #[arg(long, global = true, env = "LOOPD_SOCKET", value_name = "PATH", value_parser = parse_target)]
    socket: Option<Target>,
    /// Print one JSON object per line instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse().map_err(|e: loopd_client::Error| e.to_string())
}

/// How many items a list command asks the daemon for at a time; it shows every page.
#[derive(Debug, Clone, Copy, Args)]
pub struct PageArg {
    /// Items per request to the daemon; every page is shown. 0: the daemon's default.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub page_size: u32,
}

/// The loop a command acts on.
#[derive(Debug, Clone, Args)]
pub struct LoopArg {
    /// The loop's name. Default: the `default` loop.
    #[arg(
        long = "loop",
        short = 'l',
        value_name = "NAME",
        default_value = "",
        hide_default_value = true
    )]
    pub name: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    Status(status::StatusArgs),
    #[command(subcommand)]
    Loop(loops::LoopCommand),
    Time(time::TimeArgs),
    #[command(subcommand)]
    Timer(timer::TimerCommand),
    #[command(subcommand)]
    Future(future::FutureCommand),
    Events(events::EventsArgs),
    Metrics(metrics::MetricsArgs),
    Run(run::RunArgs),
    #[command(subcommand)]
    Proc(proc::ProcCommand),
    #[command(subcommand)]
    Signal(signal::SignalCommand),
    Completions(completions::CompletionsArgs),
    #[command(subcommand)]
    Server(server::ServerCommand),
    #[command(subcommand)]
    Conn(conn::ConnCommand),
    #[command(subcommand)]
    Udp(udp::UdpCommand),
    #[command(subcommand)]
    Dns(dns::DnsCommand),
    Sendfile(sendfile::SendfileArgs),
    #[command(subcommand)]
    Fifo(fifo::FifoCommand),
}

/// What a command gets: where the daemon is, and where to print.
pub struct Ctx<'w> {
    target: Target,
    pub out: Out<'w>,
}

impl Ctx<'_> {
    /// Connects to the daemon.
    pub async fn connect(&self) -> loopd_client::Result<Client> {
        Client::connect_to(self.target.clone()).await
    }
}

/// Parses the command line, runs the command and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| err.exit());
    let stdout = io::stdout();
    let mut stdout = stdout.lock();
    let outcome = runtime().and_then(|rt| rt.block_on(run(cli, &mut stdout)));
    let outcome = outcome.and_then(|()| stdout.flush().map_err(Into::into));
    exit_status(outcome)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt)
}

async fn run(cli: Cli, w: &mut dyn Write) -> Result<()> {
    let target = cli.global.socket.unwrap_or_else(Target::from_env);
    let mut ctx = Ctx {
        target,
        out: Out::new(cli.global.json, w),
    };
    match cli.command {
        Command::Status(args) => args.run(&mut ctx).await,
        Command::Loop(cmd) => cmd.run(&mut ctx).await,
        Command::Time(args) => args.run(&mut ctx).await,
        Command::Timer(cmd) => cmd.run(&mut ctx).await,
        Command::Future(cmd) => cmd.run(&mut ctx).await,
        Command::Events(args) => args.run(&mut ctx).await,
        Command::Metrics(args) => args.run(&mut ctx).await,
        Command::Run(args) => args.run(&mut ctx).await,
        Command::Proc(cmd) => cmd.run(&mut ctx).await,
        Command::Signal(cmd) => cmd.run(&mut ctx).await,
        Command::Completions(args) => args.run(&mut ctx),
        Command::Server(cmd) => cmd.run(&mut ctx).await,
        Command::Conn(cmd) => cmd.run(&mut ctx).await,
        Command::Udp(cmd) => cmd.run(&mut ctx).await,
        Command::Dns(cmd) => cmd.run(&mut ctx).await,
        Command::Sendfile(args) => args.run(&mut ctx).await,
        Command::Fifo(cmd) => cmd.run(&mut ctx).await,
    }
}

/// Ends loopctl with this exit status and no message (`run` and `proc wait` pass on a
/// child's status).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

fn exit_status(outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<ExitWith>().is_some() => {
            ExitCode::from(err.downcast_ref::<ExitWith>().map_or(1, |e| e.0))
        }
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "loopctl: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text the message
/// already ends with (tonic's transport errors repeat their source).
fn message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if message.ends_with(&cause) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause);
    }
    message
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loopctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        fn walk(cmd: &clap::Command, path: &str) {
            if cmd.get_name() != "help" {
                assert!(
                    cmd.get_after_help().is_some(),
                    "{path} has no examples in after_help"
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "loopctl");
    }

    #[test]
    fn bad_usage_is_exit_status_2_and_names_the_value() {
        let cases: &[(&[&str], &str)] = &[
            (&["timer", "add", "--in", "5x"], "5x"),
            (&["timer", "add", "--at", "tomorrow"], "tomorrow"),
            (&["timer", "add", "--loop-time", "NaN"], "NaN"),
            (&["timer", "show", "abc"], "abc"),
            (&["future", "wait", "1", "--timeout", "soon"], "soon"),
            (&["events", "--kind", "timer"], "timer"),
            (&["loop", "debug", "x", "maybe"], "maybe"),
            (&["--socket", "https://h:1", "status"], "https://h:1"),
            (&["completions", "cmd.exe"], "cmd.exe"),
        ];
        for (args, value) in cases {
            let err = parse(args).expect_err(&format!("{args:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(value), "{args:?}: {err}");
        }
    }

    #[test]
    fn timer_add_needs_exactly_one_time() {
        let none = parse(&["timer", "add"]).unwrap_err();
        assert_eq!(none.kind(), ErrorKind::MissingRequiredArgument);
        let two = parse(&["timer", "add", "--soon", "--in", "1s"]).unwrap_err();
        assert_eq!(two.kind(), ErrorKind::ArgumentConflict);
        assert!(parse(&["timer", "add", "--in", "1.5s", "--tag", "t"]).is_ok());
    }

    #[test]
    fn help_and_version_exit_0() {
        for args in [&["--help"][..], &["timer", "add", "--help"], &["--version"]] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 0, "{args:?}");
        }
    }

    #[test]
    fn socket_accepts_paths_and_unix_uris() {
        let cli = parse(&["--socket", "unix:/tmp/x.sock", "status"]).unwrap();
        assert_eq!(cli.global.socket, Some(Target::Unix("/tmp/x.sock".into())));
        let cli = parse(&["status", "--socket", "/tmp/y.sock", "--json"]).unwrap();
        assert_eq!(cli.global.socket, Some(Target::Unix("/tmp/y.sock".into())));
        assert!(cli.global.json);
    }

    #[test]
    fn error_messages_skip_repeated_causes() {
        let io = io::Error::from_raw_os_error(2);
        let err = anyhow::Error::from(io)
            .context("transport error: No such file or directory (os error 2)");
        let err = err.context("failed to connect to unix:/x");
        assert_eq!(
            message(&err),
            "failed to connect to unix:/x: transport error: No such file or directory (os error 2)"
        );
        let status = loopd_client::Error::from(tonic::Status::not_found("unknown handle 42"));
        assert_eq!(message(&status.into()), "NOT_FOUND: unknown handle 42");
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let err =
            anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
