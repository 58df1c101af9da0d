//! [`Spec`]: a `ProcessSpec` checked at the front door, before any job reaches a loop.
//!
//! # Invariants
//! - Whatever `execve` would misread is refused here with INVALID_ARGUMENT naming the
//!   field and the value: an empty argv, a NUL byte in argv, cwd or env, argv and shell
//!   both set, STDOUT for stdin or stdout.
//! - A shell command is refused (FAILED_PRECONDITION) unless the config allows shells.
//! - argv is kept as bytes and reaches `execve` byte for byte.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use loopd::{Stdio as EngineStdio, SubprocessOptions};
use loopd_proto::pb;

use super::env;
use crate::config::ProcessSettings;
use crate::status::{Error, Result};

/// What a child's standard stream is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdioMode {
    /// A pipe to the daemon.
    Pipe,
    /// `/dev/null`.
    DevNull,
    /// stderr only: where stdout goes.
    Stdout,
}

impl StdioMode {
    fn engine(self) -> EngineStdio {
        match self {
            StdioMode::Pipe => EngineStdio::Pipe,
            StdioMode::DevNull => EngineStdio::DevNull,
            StdioMode::Stdout => EngineStdio::Stdout,
        }
    }
}

/// A checked `ProcessSpec`.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The argv given to `execve` (for a shell command: `/bin/sh -c CMD`).
    pub argv: Vec<Vec<u8>>,
    /// The working directory; `None`: the daemon's.
    pub cwd: Option<Vec<u8>>,
    /// The requested variables (checked; the allowlist is added on spawn).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// stdin, stdout, stderr.
    pub stdio: [StdioMode; 3],
    /// Whether the child leads its own process group.
    pub new_group: bool,
    /// Output bytes kept per stream.
    pub retain: u64,
    /// Pause the output pipes until a reader attaches.
    pub hold_output: bool,
}

impl Spec {
    /// Checks `spec` under `settings`.
    pub fn check(spec: Option<&pb::ProcessSpec>, settings: &ProcessSettings) -> Result<Spec> {
        let spec = spec.ok_or_else(|| Error::invalid("spec", "unset"))?;
        let argv = argv(spec, settings)?;
        let cwd = match spec.cwd.as_slice() {
            [] => None,
            cwd if cwd.contains(&0) => {
                return Err(Error::invalid(
                    "cwd with a NUL byte",
                    format!("{:?}", String::from_utf8_lossy(cwd)),
                ));
            }
            cwd => Some(cwd.to_vec()),
        };
        for (index, var) in spec.env.iter().enumerate() {
            env::check_var(index, &var.name, &var.value)?;
        }
        let env = spec
            .env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let stdio = [
            stdio("stdin", spec.stdin, StdioMode::DevNull)?,
            stdio("stdout", spec.stdout, StdioMode::Pipe)?,
            stdio("stderr", spec.stderr, StdioMode::Pipe)?,
        ];
        let retain = match spec.retain_output_bytes {
            0 => settings.default_retain_bytes,
            n => n,
        }
        .min(settings.max_retain_bytes);
        Ok(Spec {
            argv,
            cwd,
            env,
            stdio,
            new_group: spec.new_process_group.unwrap_or(true),
            retain,
            hold_output: spec.hold_output_until_read,
        })
    }

    /// The engine's options; the environment is cleared and rebuilt from `allowlist`.
    pub fn options(&self, allowlist: &[String]) -> SubprocessOptions {
        SubprocessOptions {
            stdin: self.stdio[0].engine(),
            stdout: self.stdio[1].engine(),
            stderr: self.stdio[2].engine(),
            cwd: self
                .cwd
                .as_ref()
                .map(|c| PathBuf::from(OsString::from_vec(c.clone()))),
            env_clear: true,
            env: env::build(allowlist, std::env::vars_os(), &self.env),
            process_group: self.new_group.then_some(0),
            watcher: None,
        }
    }

    /// argv as the engine takes it.
    pub fn os_argv(&self) -> Vec<OsString> {
        self.argv.iter().cloned().map(OsString::from_vec).collect()
    }
}

fn argv(spec: &pb::ProcessSpec, settings: &ProcessSettings) -> Result<Vec<Vec<u8>>> {
    match (spec.argv.is_empty(), spec.shell.is_empty()) {
        (false, false) => Err(Error::invalid(
            "spec",
            "both argv and shell are set (set exactly one)",
        )),
        (true, true) => Err(Error::invalid(
            "argv",
            "[] (it needs at least the program, or set shell)",
        )),
        (true, false) => {
            if !settings.allow_shell {
                return Err(Error::ShellDisabled);
            }
            if spec.shell.contains(&0) {
                return Err(Error::invalid(
                    "shell command with a NUL byte",
                    shown(&spec.shell),
                ));
            }
            Ok(vec![
                b"/bin/sh".to_vec(),
                b"-c".to_vec(),
                spec.shell.clone(),
            ])
        }
        (false, true) => {
            if spec.argv[0].is_empty() {
                return Err(Error::invalid("argv[0]", "\"\" (the program is empty)"));
            }
            for (i, arg) in spec.argv.iter().enumerate() {
                if arg.contains(&0) {
                    return Err(Error::invalid(
                        "argument with a NUL byte",
                        format!("argv[{i}] {}", shown(arg)),
                    ));
                }
            }
            Ok(spec.argv.clone())
        }
    }
}

fn shown(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn stdio(what: &'static str, raw: i32, default: StdioMode) -> Result<StdioMode> {
    match pb::Stdio::try_from(raw) {
        Ok(pb::Stdio::Unspecified) => Ok(default),
        Ok(pb::Stdio::Pipe) => Ok(StdioMode::Pipe),
        Ok(pb::Stdio::Devnull) => Ok(StdioMode::DevNull),
        Ok(pb::Stdio::Stdout) if what == "stderr" => Ok(StdioMode::Stdout),
        Ok(pb::Stdio::Stdout) => Err(Error::invalid(
            what,
            "STDOUT (only stderr can go to stdout)",
        )),
        Err(_) => Err(Error::invalid(what, format!("unknown Stdio value {raw}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&[u8]]) -> pb::ProcessSpec {
        pb::ProcessSpec {
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            ..Default::default()
        }
    }

    fn check(
        spec: pb::ProcessSpec,
        settings: &ProcessSettings,
    ) -> std::result::Result<Spec, String> {
        Spec::check(Some(&spec), settings).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_specs_are_refused_naming_the_value() {
        let settings = ProcessSettings::default();
        let shell = pb::ProcessSpec {
            shell: b"echo hi".to_vec(),
            ..Default::default()
        };
        let both = pb::ProcessSpec {
            shell: b"x".to_vec(),
            ..spec(&[b"true"])
        };
        let cwd = pb::ProcessSpec {
            cwd: b"/tmp\0x".to_vec(),
            ..spec(&[b"true"])
        };
        let stdout_stdout = pb::ProcessSpec {
            stdout: pb::Stdio::Stdout as i32,
            ..spec(&[b"true"])
        };
        let cases: Vec<(pb::ProcessSpec, Option<&str>)> = vec![
            (spec(&[b"true"]), None),
            (spec(&[]), Some("argv: []")),
            (spec(&[b""]), Some("argv[0]")),
            (spec(&[b"echo", b"a\0b"]), Some("argv[1] \"a\\0b\"")),
            (shell, Some("shell")),
            (both, Some("both argv and shell")),
            (cwd, Some("cwd")),
            (stdout_stdout, Some("stdout: STDOUT")),
        ];
        for (spec, want) in cases {
            match (check(spec.clone(), &settings), want) {
                (Ok(_), None) => {}
                (Err(msg), Some(want)) => assert!(msg.contains(want), "{spec:?}: {msg}"),
                (got, want) => panic!("{spec:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn defaults_and_caps() {
        let settings = ProcessSettings {
            allow_shell: true,
            max_retain_bytes: 100,
            ..ProcessSettings::default()
        };
        let got = check(spec(&[b"true"]), &settings).unwrap();
        assert_eq!(
            got.stdio,
            [StdioMode::DevNull, StdioMode::Pipe, StdioMode::Pipe]
        );
        assert!(got.new_group);
        assert_eq!(got.retain, 100, "the default is capped too");
        let big = pb::ProcessSpec {
            retain_output_bytes: 1 << 40,
            ..spec(&[b"true"])
        };
        assert_eq!(check(big, &settings).unwrap().retain, 100);
        let shell = pb::ProcessSpec {
            shell: b"echo $HOME".to_vec(),
            ..Default::default()
        };
        let got = check(shell, &settings).unwrap();
        assert_eq!(
            got.argv,
            [b"/bin/sh".to_vec(), b"-c".to_vec(), b"echo $HOME".to_vec()]
        );
    }
}
