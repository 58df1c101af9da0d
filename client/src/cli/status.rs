//! `loopctl status`: who the daemon is (DaemonService.GetInfo).

use anyhow::Result;
use clap::Args;
use loopd_client::DaemonInfo;
use serde_json::{Value, json};

use super::Ctx;
use super::output;

/// Show the daemon's version, process, paths, limits and loops.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl status
  loopctl status --json | jq .pid")]
pub struct StatusArgs {}

impl StatusArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let info = ctx.connect().await?.info().await?;
        if ctx.out.json {
            return Ok(ctx.out.json_line(&to_json(&info))?);
        }
        Ok(ctx.out.pairs(&lines(&info))?)
    }
}

fn lines(info: &DaemonInfo) -> Vec<(&'static str, String)> {
    let limits = &info.limits;
    vec![
        ("version", info.version.clone()),
        ("pid", info.pid.to_string()),
        ("uptime", output::duration(info.uptime)),
        ("started", output::time(info.started_at)),
        (
            "socket",
            info.socket_path
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string()),
        ),
        ("state dir", info.state_dir.display().to_string()),
        ("loops", info.loops.join(", ")),
        ("max payload", format!("{} bytes", limits.max_payload_bytes)),
        ("max batch", format!("{} entries", limits.max_batch_entries)),
        ("max message", format!("{} bytes", limits.max_message_bytes)),
        (
            "event ring",
            format!("{} events", limits.event_ring_capacity),
        ),
    ]
}

fn to_json(info: &DaemonInfo) -> Value {
    let limits = &info.limits;
    json!({
        "version": info.version,
        "pid": info.pid,
        "uptime_seconds": output::secs(info.uptime),
        "started_at": output::time_json(info.started_at),
        "socket_path": info.socket_path.as_ref().map(|p| p.display().to_string()),
        "state_dir": info.state_dir.display().to_string(),
        "loops": info.loops,
        "limits": {
            "max_payload_bytes": limits.max_payload_bytes,
            "max_batch_entries": limits.max_batch_entries,
            "max_message_bytes": limits.max_message_bytes,
            "event_ring_capacity": limits.event_ring_capacity,
        },
    })
}
