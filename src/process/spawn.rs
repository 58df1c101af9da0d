//! Starting a child for [`EventLoop::subprocess_exec`](crate::EventLoop::subprocess_exec):
//! what its stdin, stdout and stderr become ([`Stdio`]), the rest of
//! [`SubprocessOptions`], the checks made before anything is spawned, and the spawn.
//!
//! # Invariants
//! - A child is started by glibc's `posix_spawn`/`posix_spawnp`, called directly: glibc
//!   clones with `CLONE_VM | CLONE_VFORK` (the parent's page tables are never copied) and
//!   no Rust code runs in the child. glibc (2.24+) returns an `exec` failure as
//!   `posix_spawn`'s own error, so a missing program is [`Error::Spawn`] naming it, at
//!   spawn time, never an exit status 127.
//! - The child's 0, 1 and 2 are set by file actions (`dup2`, which clears close-on-exec
//!   on the copy). A source descriptor in 0..=2 is first copied above 2, so one `dup2`
//!   can never overwrite the source of the next.
//! - The child inherits nothing else (Popen's `close_fds=True`, asyncio's default): every
//!   descriptor made here is close-on-exec, and a last file action closes everything
//!   from 3 up (`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34+, one
//!   `close_range` in the child), so a descriptor the process got without close-on-exec
//!   (inherited, or from a C library) does not leak either.
//! - The child starts with an empty signal mask and SIGPIPE and SIGXFSZ at their default
//!   action (asyncio's `restore_signals`); `exec` resets handlers. A new process group is
//!   `POSIX_SPAWN_SETPGROUP`, a working directory `posix_spawn_file_actions_addchdir_np`
//!   (glibc 2.29+).
//! - What `execve` would misread (a NUL byte in an argument, `cwd` or the environment, a
//!   `=` in a variable's name) is refused before spawning, naming the offender.
//! - A program without a slash is looked up in `PATH` by `posix_spawnp` (the loop
//!   process's `PATH`); when the child's environment changes `PATH` (or is cleared, which
//!   searches `/bin:/usr/bin`), it is looked up here in the child's `PATH`, as `execvp`
//!   in the child would.
//! - The loop's pipe ends are non-blocking, the child's are blocking. The parent's copies
//!   of the child's ends are closed right after the spawn, so end of file reaches the loop.
//! - `/dev/null` is opened once per process (close-on-exec) and `dup2`ed into children.
//! - Per spawn, the arguments and (only if changed) the environment are packed into one
//!   buffer each plus a pointer array; an unchanged environment is glibc's `environ`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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

/// Starts `argv` as `options` say; the child's pid and the loop's ends of its pipes.
/// `check_inputs` must have passed.
///
/// Fails with [`Error::Spawn`] (naming the program) if it cannot be started, e.g.
/// `ENOENT`; [`Error::InvalidArgument`] naming `cwd` if that is not a directory the child
/// can enter; [`Error::Io`] if making a pipe or opening `/dev/null` fails.
pub(super) fn spawn_child(
    argv: &[&OsStr],
    options: SubprocessOptions,
) -> Result<(u32, ParentEnds)> {
    let mut args = CStrings::default();
    for arg in argv {
        args.push(&[arg.as_bytes()]);
    }
    let env = child_env(&options);
    let program = match child_path(&options) {
        Some(path) if !has_slash(argv[0]) => Some(resolve(argv[0], &path)?),
        _ => None,
    };
    let (stdio, ends) = plan_stdio(options.stdin, options.stdout, options.stderr)?;
    let mut actions = FileActions::new(&stdio)?;
    if let Some(cwd) = &options.cwd {
        actions.add_chdir(cwd)?;
    }
    let attr = SpawnAttr::new(options.process_group)?;
    let argv_ptrs = args.pointers();
    let env_ptrs = env.as_ref().map(CStrings::pointers);
    let envp = match &env_ptrs {
        Some(ptrs) => ptrs.as_ptr(),
        // SAFETY: reading the pointer glibc keeps; `set_var` racing with it is the
        // caller's undefined behaviour already (it is `unsafe` for that reason).
        None => unsafe { environ }.cast_const(),
    };
    let spawned = call_spawn(program.as_ref(), &argv_ptrs, envp, &actions, &attr);
    drop(stdio); // closes the parent's copies of the child's ends
    match spawned {
        Ok(pid) => Ok((pid as u32, ends)),
        Err(errno) => Err(spawn_error(argv[0], options.cwd.as_deref(), errno)),
    }
}

/// `posix_spawn` of `program` when it was resolved here, else `posix_spawnp` of
/// `argv[0]` (searched in the loop process's `PATH`). The pid, or the errno.
fn call_spawn(
    program: Option<&CString>,
    argv: &[*mut libc::c_char],
    envp: *const *mut libc::c_char,
    actions: &FileActions,
    attr: &SpawnAttr,
) -> std::result::Result<libc::pid_t, i32> {
    let mut pid: libc::pid_t = 0;
    // SAFETY: every string is NUL-terminated, `argv` and `envp` end in a null pointer
    // (`CStrings::pointers`, or glibc's `environ`), and all outlive the call;
    // `actions` and `attr` are initialised.
    let rc = unsafe {
        match program {
            Some(path) => libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                actions.as_ptr(),
                attr.as_ptr(),
                argv.as_ptr(),
                envp,
            ),
            None => libc::posix_spawnp(
                &mut pid,
                argv[0],
                actions.as_ptr(),
                attr.as_ptr(),
                argv.as_ptr(),
                envp,
            ),
        }
    };
    if rc == 0 { Ok(pid) } else { Err(rc) }
}

/// The error for a failed spawn: the program's, unless `cwd` is what is wrong (glibc
/// reports a failed `chdir` with the same errno as a failed `exec`).
fn spawn_error(program: &OsStr, cwd: Option<&Path>, errno: i32) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    if let Some(cwd) = cwd.filter(|cwd| !cwd.is_dir()) {
        return invalid("cwd", format!("{cwd:?} ({source})"));
    }
    Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}

fn has_slash(program: &OsStr) -> bool {
    program.as_bytes().contains(&b'/')
}

/// The `PATH` to search when the child's environment changes it: its new value, or
/// `execvp`'s default when the environment is cleared without one; `None` when the child
/// inherits the loop process's `PATH` (then `posix_spawnp` searches it).
fn child_path(options: &SubprocessOptions) -> Option<OsString> {
    let set = options.env.iter().rev().find(|(name, _)| name == "PATH");
    match set {
        Some((_, value)) => Some(value.clone()),
        None if options.env_clear => Some("/bin:/usr/bin".into()),
        None => None,
    }
}

/// The first executable regular file named `program` in `path`'s directories (an empty
/// entry is the current directory), as `execvp` finds it.
fn resolve(program: &OsStr, path: &OsStr) -> Result<CString> {
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        let Ok(c_path) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue; // a NUL in PATH: that entry names nothing
        };
        if is_executable_file(&c_path) {
            return Ok(c_path);
        }
    }
    Err(Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

fn is_executable_file(path: &CString) -> bool {
    let path_ref = Path::new(OsStr::from_bytes(path.as_bytes()));
    // SAFETY: `path` is NUL-terminated.
    path_ref.is_file() && unsafe { libc::access(path.as_ptr(), libc::X_OK) } == 0
}

/// The child's environment as `NAME=value` strings, or `None` when it is the loop
/// process's unchanged. Later settings of a name win over earlier ones.
fn child_env(options: &SubprocessOptions) -> Option<CStrings> {
    if !options.env_clear && options.env.is_empty() {
        return None;
    }
    let mut env = CStrings::default();
    if !options.env_clear {
        for (name, value) in std::env::vars_os() {
            if !options.env.iter().any(|(set, _)| *set == name) {
                env.push(&[name.as_bytes(), b"=", value.as_bytes()]);
            }
        }
    }
    for (i, (name, value)) in options.env.iter().enumerate() {
        if !options.env[i + 1..].iter().any(|(later, _)| later == name) {
            env.push(&[name.as_bytes(), b"=", value.as_bytes()]);
        }
    }
    Some(env)
}

/// NUL-terminated strings packed in one buffer, for `execve`'s argv and envp.
#[derive(Default)]
struct CStrings {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl CStrings {
    /// Adds one string, the concatenation of `parts`, which hold no NUL
    /// (`check_inputs` refused them).
    fn push(&mut self, parts: &[&[u8]]) {
        self.starts.push(self.bytes.len());
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.bytes.push(0);
    }

    /// Pointers to the strings, then a null pointer. Valid while `self` is.
    fn pointers(&self) -> Vec<*mut libc::c_char> {
        let base = self.bytes.as_ptr();
        let strings = self.starts.iter().map(|&start| {
            // SAFETY: `start` is an index into `bytes`.
            unsafe { base.add(start) }.cast::<libc::c_char>().cast_mut()
        });
        strings
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    }
}

unsafe extern "C" {
    /// glibc's environment, what `getenv` reads.
    static environ: *mut *mut libc::c_char;
}

/// What the child's 0, 1 and 2 become: `None` inherits, `Some(fd)` is `dup2(fd, n)`.
/// Owns the descriptors made for the child; dropping it closes them.
struct ChildStdio {
    sources: [Option<RawFd>; 3],
    owned: [Option<OwnedFd>; 3],
}

impl ChildStdio {
    /// Makes `fd` the source of the child's descriptor `target`, first copying it above 2
    /// if it is one of 0, 1, 2 (a `dup2` onto it could otherwise run before it is read).
    fn set(&mut self, target: usize, fd: RawFd, owned: Option<OwnedFd>) -> Result<()> {
        let (fd, owned) = if fd <= 2 {
            let high = dup_above_stdio(fd)?;
            (high.as_raw_fd(), Some(high))
        } else {
            (fd, owned)
        };
        self.sources[target] = Some(fd);
        self.owned[target] = owned;
        Ok(())
    }
}

/// The child's stdio and the loop's pipe ends. stderr `Stdio::Stdout` gets stdout's
/// source (the loop process's fd 1 when stdout is inherited).
fn plan_stdio(stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<(ChildStdio, ParentEnds)> {
    let mut stdio = ChildStdio {
        sources: [None; 3],
        owned: [None, None, None],
    };
    let mut ends = ParentEnds::default();
    if let Stdio::Pipe = stdin {
        let (child, parent) = pipe()?;
        ends.stdin = Some(Sender::from(nonblocking(parent)?));
        stdio.set(0, child.as_raw_fd(), Some(child))?;
    } else {
        plan_simple(&mut stdio, 0, stdin)?;
    }
    for (target, how) in [(1, stdout), (2, stderr)] {
        match how {
            Stdio::Pipe => {
                let (parent, child) = pipe()?;
                let rx = Some(Receiver::from(nonblocking(parent)?));
                if target == 1 {
                    ends.stdout = rx;
                } else {
                    ends.stderr = rx;
                }
                stdio.set(target, child.as_raw_fd(), Some(child))?;
            }
            Stdio::Stdout => match stdio.sources[1] {
                Some(fd) => stdio.set(2, fd, None)?,
                None => stdio.set(2, libc::STDOUT_FILENO, None)?,
            },
            other => plan_simple(&mut stdio, target, other)?,
        }
    }
    Ok((stdio, ends))
}

/// `/dev/null`, an fd, or inherit.
fn plan_simple(stdio: &mut ChildStdio, target: usize, how: Stdio) -> Result<()> {
    match how {
        Stdio::DevNull => stdio.set(target, devnull()?, None),
        Stdio::Fd(fd) => stdio.set(target, fd.as_raw_fd(), Some(fd)),
        // Pipe is handled by the caller; Stdout for stdin is refused by check_inputs.
        Stdio::Inherit | Stdio::Pipe | Stdio::Stdout => Ok(()),
    }
}

/// `/dev/null` opened read-write and close-on-exec, once per process.
fn devnull() -> Result<RawFd> {
    static DEVNULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEVNULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null") // std opens with O_CLOEXEC
        .map_err(Error::io("open /dev/null"))?;
    let _ = DEVNULL.set(OwnedFd::from(file)); // another thread may have won: ours closes
    DEVNULL.get().map(AsRawFd::as_raw_fd).ok_or(Error::Io {
        op: "open /dev/null",
        source: io::Error::other("not cached"),
    })
}

/// A close-on-exec copy of `fd` numbered 3 or more.
fn dup_above_stdio(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes an fd and a minimum and returns a new fd.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(Error::Io {
            op: "fcntl(F_DUPFD_CLOEXEC)",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A close-on-exec pipe: (read end, write end). Both ends are blocking; the caller makes
/// the loop's end non-blocking.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(Error::Io {
            op: "pipe2",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 just returned both; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read, write))
}

/// `fd` made non-blocking (the loop's end of a pipe).
fn nonblocking(fd: OwnedFd) -> Result<OwnedFd> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int from a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &on) } == -1 {
        return Err(Error::Io {
            op: "ioctl(FIONBIO)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(fd)
}

/// An errno-returning `posix_spawn*` call's result.
fn check(op: &'static str, rc: libc::c_int) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    Err(Error::Io {
        op,
        source: io::Error::from_raw_os_error(rc),
    })
}

/// `posix_spawn_file_actions_t`: the child's `dup2`s, `closefrom(3)` and `chdir`.
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new(stdio: &ChildStdio) -> Result<Self> {
        let mut raw = Box::new(MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit());
        // SAFETY: init writes the whole struct.
        check("posix_spawn_file_actions_init", unsafe {
            libc::posix_spawn_file_actions_init(raw.as_mut_ptr())
        })?;
        // SAFETY: initialised just above; Box<MaybeUninit<T>> and Box<T> share a layout.
        let mut actions = FileActions(unsafe { Box::from_raw(Box::into_raw(raw).cast()) });
        for (target, source) in stdio.sources.iter().enumerate() {
            let Some(source) = *source else { continue };
            // SAFETY: `actions` is initialised; the fds are plain integers here.
            check("posix_spawn_file_actions_adddup2", unsafe {
                libc::posix_spawn_file_actions_adddup2(&mut *actions.0, source, target as i32)
            })?;
        }
        // SAFETY: initialised actions; runs after the dup2s, which only target 0..=2.
        check("posix_spawn_file_actions_addclosefrom_np", unsafe {
            libc::posix_spawn_file_actions_addclosefrom_np(&mut *actions.0, 3)
        })?;
        Ok(actions)
    }

    /// The child changes to `cwd` before `exec` (relative programs resolve from there).
    fn add_chdir(&mut self, cwd: &Path) -> Result<()> {
        let cwd = CString::new(cwd.as_os_str().as_bytes())
            .map_err(|_| invalid("cwd with a NUL byte", format!("{cwd:?}")))?;
        // SAFETY: initialised actions; glibc copies the NUL-terminated path.
        check("posix_spawn_file_actions_addchdir_np", unsafe {
            libc::posix_spawn_file_actions_addchdir_np(&mut *self.0, cwd.as_ptr())
        })
    }

    fn as_ptr(&self) -> *const libc::posix_spawn_file_actions_t {
        &*self.0
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut *self.0) };
    }
}

/// `posix_spawnattr_t`: empty signal mask, SIGPIPE and SIGXFSZ at their defaults, and
/// the process group if one is asked for.
struct SpawnAttr(Box<libc::posix_spawnattr_t>);

impl SpawnAttr {
    fn new(process_group: Option<i32>) -> Result<Self> {
        let mut raw = Box::new(MaybeUninit::<libc::posix_spawnattr_t>::uninit());
        // SAFETY: init writes the whole struct.
        check("posix_spawnattr_init", unsafe {
            libc::posix_spawnattr_init(raw.as_mut_ptr())
        })?;
        // SAFETY: initialised just above; Box<MaybeUninit<T>> and Box<T> share a layout.
        let mut attr = SpawnAttr(unsafe { Box::from_raw(Box::into_raw(raw).cast()) });
        let attr_ptr: *mut libc::posix_spawnattr_t = &mut *attr.0;
        let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        // SAFETY: `attr_ptr` is initialised; the sigsets are initialised by sigemptyset
        // before any other use.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            check("posix_spawnattr_setsigmask", {
                libc::posix_spawnattr_setsigmask(attr_ptr, set.as_ptr())
            })?;
            libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGXFSZ);
            check("posix_spawnattr_setsigdefault", {
                libc::posix_spawnattr_setsigdefault(attr_ptr, set.as_ptr())
            })?;
            if let Some(pgid) = process_group {
                flags |= libc::POSIX_SPAWN_SETPGROUP;
                check("posix_spawnattr_setpgroup", {
                    libc::posix_spawnattr_setpgroup(attr_ptr, pgid)
                })?;
            }
            check("posix_spawnattr_setflags", {
                libc::posix_spawnattr_setflags(attr_ptr, flags as libc::c_short)
            })?;
        }
        Ok(attr)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        &*self.0
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut *self.0) };
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

    /// Environment settings, as `SubprocessOptions::env` holds them.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    fn with_env(env_clear: bool, env: Vars) -> SubprocessOptions {
        SubprocessOptions {
            env_clear,
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn path_is_searched_here_only_when_the_child_gets_another() {
        let cases: [(bool, Vars, Option<&str>); 5] = [
            (false, &[], None),
            (false, &[("HOME", "/x")], None),
            (false, &[("PATH", "/a"), ("PATH", "/b:/c")], Some("/b:/c")),
            (true, &[], Some("/bin:/usr/bin")),
            (true, &[("PATH", "")], Some("")),
        ];
        for (clear, env, want) in cases {
            let got = child_path(&with_env(clear, env));
            assert_eq!(got.as_deref(), want.map(OsStr::new), "{clear} {env:?}");
        }
    }

    fn strings(env: &CStrings) -> Vec<String> {
        let mut all: Vec<String> = env
            .bytes
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(all.pop().as_deref(), Some(""), "ends in NUL");
        assert_eq!(all.len(), env.starts.len());
        all
    }

    #[test]
    fn the_child_environment_is_built_only_when_changed() {
        assert!(child_env(&with_env(false, &[])).is_none());
        let cases: [(Vars, &[&str]); 3] = [
            (&[], &[]),
            (&[("A", "1"), ("B", "x=y")], &["A=1", "B=x=y"]),
            (&[("A", "1"), ("B", "2"), ("A", "3")], &["B=2", "A=3"]),
        ];
        for (env, want) in cases {
            let built = child_env(&with_env(true, env)).unwrap();
            assert_eq!(strings(&built), want, "{env:?}");
            assert_eq!(built.pointers().len(), want.len() + 1);
            assert!(built.pointers().last().unwrap().is_null());
        }
        // Without env_clear the loop's variables come along, unless overridden.
        let had_path = std::env::var_os("PATH").is_some();
        let built = child_env(&with_env(false, &[("PATH", "/mine")])).unwrap();
        let paths: Vec<String> = strings(&built)
            .into_iter()
            .filter(|s| s.starts_with("PATH="))
            .collect();
        assert_eq!(paths, ["PATH=/mine"], "the loop had a PATH: {had_path}");
        assert!(strings(&built).len() >= std::env::vars_os().count());
    }

    #[test]
    fn resolve_finds_the_first_executable_file_in_path() {
        let empty = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, Option<&str>); 5] = [
            ("sh", "/bin:/usr/bin", Some("/bin/sh")),
            ("sh", "/nonexistent:/usr/bin", Some("/usr/bin/sh")),
            ("sh", "", None), // "." : the test's working directory has no `sh`
            ("no-such-program-xyz", "/bin:/usr/bin", None),
            ("bin", "/", None), // a directory is not a program
        ];
        for (program, path, want) in cases {
            let path = path.replace("/nonexistent", &empty.path().to_string_lossy());
            let got = resolve(OsStr::new(program), OsStr::new(&path));
            match (got, want) {
                (Ok(found), Some(want)) => assert_eq!(found.to_str(), Ok(want)),
                (
                    Err(Error::Spawn {
                        program: named,
                        source,
                    }),
                    None,
                ) => {
                    assert_eq!(named, program);
                    assert_eq!(source.kind(), io::ErrorKind::NotFound);
                }
                (got, want) => panic!("{program} in {path:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn spawn_errors_name_the_cwd_when_it_is_the_culprit() {
        let enoent = libc::ENOENT;
        let cases: [(Option<&str>, &str); 3] = [
            (None, "failed to start program \"prog\""),
            (Some("/"), "failed to start program \"prog\""),
            (
                Some("/no/such/dir-xyz"),
                "invalid cwd: \"/no/such/dir-xyz\"",
            ),
        ];
        for (cwd, want) in cases {
            let err = spawn_error(OsStr::new("prog"), cwd.map(Path::new), enoent);
            assert!(err.to_string().contains(want), "{cwd:?}: {err}");
        }
    }

    #[test]
    fn stdio_sources_in_0_to_2_are_moved_above_2() {
        let mut stdio = ChildStdio {
            sources: [None; 3],
            owned: [None, None, None],
        };
        stdio.set(1, libc::STDERR_FILENO, None).unwrap();
        let moved = stdio.sources[1].unwrap();
        assert!(moved > 2, "{moved}");
        assert_eq!(stdio.owned[1].as_ref().map(AsRawFd::as_raw_fd), Some(moved));
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(moved, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let high = devnull().unwrap();
        stdio.set(0, high, None).unwrap();
        assert_eq!(stdio.sources[0], Some(high));
        assert!(
            stdio.owned[0].is_none(),
            "the cached /dev/null is not ours to close"
        );
    }
}
