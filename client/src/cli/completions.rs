//! `loopctl completions SHELL`: shell completion scripts (clap_complete).

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Ctx};

/// Print a completion script for a shell.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl completions bash > /etc/bash_completion.d/loopctl
  loopctl completions zsh > \"${fpath[1]}/_loopctl\"
  loopctl completions fish > ~/.config/fish/completions/loopctl.fish")]
pub struct CompletionsArgs {
    /// bash, elvish, fish, powershell or zsh.
    shell: Shell,
}

impl CompletionsArgs {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut buf = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "loopctl", &mut buf);
        let text = String::from_utf8_lossy(&buf);
        Ok(ctx.out.line(text.trim_end())?)
    }
}
