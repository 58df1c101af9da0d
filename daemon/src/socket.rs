//! The Unix socket: a private directory, a lock, a live-socket check, mode 0660.
//!
//! # Invariants
//! - One daemon per socket: an exclusive `flock` on `<socket>.lock` is taken before the
//!   socket is touched and held for the daemon's life.
//! - A live socket is never unlinked: an existing path is removed only if nothing
//!   accepts a connection on it (a stale socket left by a crash).
//! - A directory the daemon creates is mode 0700; the socket itself is mode 0660.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A bound socket and the lock that makes it ours.
pub struct Bound {
    /// The listening socket (non-blocking).
    pub listener: UnixListener,
    /// Where it is.
    pub path: PathBuf,
    _lock: File,
}

impl Drop for Bound {
    fn drop(&mut self) {
        // We hold the lock, so the path is still our socket.
        let _ = fs::remove_file(&self.path);
    }
}

/// Creates `dir` (and parents) with mode 0700 for the last component if missing; warns if
/// an existing one lets others in.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
        // `mode` is filtered by the umask; make sure.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
        return Ok(());
    }
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "directory {} has mode {:o}: other users may reach the socket or state",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// Binds the socket at `path`, failing clearly if another daemon serves it.
pub fn bind(path: &Path) -> anyhow::Result<Bound> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_dir(dir)?;
    let lock = take_lock(path)?;
    remove_stale(path)?;
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    Ok(Bound {
        listener,
        path: path.to_owned(),
        _lock: lock,
    })
}

fn take_lock(path: &Path) -> anyhow::Result<File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening lock file {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another loopd is already serving {} (it holds {})",
                path.display(),
                lock_path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", lock_path.display()));
    }
    Ok(file)
}

fn remove_stale(path: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!("another process is listening on {}", path.display()),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale socket {}", path.display());
            fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))
        }
        Err(err) => Err(err)
            .with_context(|| format!("{} exists and is not a socket we can check", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bind_fails_and_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/loopd.sock");
        let first = bind(&path).unwrap();
        let mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        let err = format!("{:#}", bind(&path).err().unwrap());
        assert!(err.contains("already serving"), "{err}");
        assert!(path.exists(), "the live socket was kept");
        drop(first);
        // A stale socket file (no listener) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let again = bind(&path).unwrap();
        assert!(UnixStream::connect(&again.path).is_ok());
    }
}
