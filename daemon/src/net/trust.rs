//! What a TLS connection trusts when its request names no CA (OpenConnection, StartTls):
//! the `[tls] ca_file` of the config, or else the system's trust store, as Python's
//! `ssl.create_default_context()`.
//!
//! # Invariants
//! - A configured `ca_file` is loaded at startup ([`configure`]), and one that does not
//!   load stops the daemon, naming the file.
//! - The system's trust store is read on the first connection that needs it, not at
//!   startup (most daemons never open a TLS connection), and then shared.
//! - An empty or unreadable system store is not fatal (the daemon needs no TLS to run):
//!   it is logged once, and a connection without a CA is then FAILED_PRECONDITION saying
//!   why ([`Error::NoTrustRoots`]).

use std::sync::OnceLock;

use loopd::TlsClientConfig;

use crate::config::TlsSettings;
use crate::status::{Error, Result};

static DEFAULT: OnceLock<std::result::Result<TlsClientConfig, String>> = OnceLock::new();

/// Loads a configured `ca_file` as the default trust; the first call wins. Fails for a
/// file that does not load.
pub fn configure(settings: &TlsSettings) -> anyhow::Result<()> {
    if settings.ca_file.is_empty() {
        return Ok(()); // the system's store, on first use
    }
    let loaded = load(settings);
    if let Err(why) = &loaded {
        anyhow::bail!("tls.ca_file: {why}");
    }
    let _ = DEFAULT.set(loaded);
    Ok(())
}

fn load(settings: &TlsSettings) -> std::result::Result<TlsClientConfig, String> {
    if !settings.ca_file.is_empty() {
        return TlsClientConfig::with_ca_pem_file(&settings.ca_file).map_err(|e| e.to_string());
    }
    let (config, skipped) = TlsClientConfig::with_system_roots().map_err(|e| e.to_string())?;
    if skipped > 0 {
        tracing::debug!("{skipped} certificates of the system's trust store do not parse");
    }
    Ok(config)
}

/// The configuration for a TLS connection whose request names no CA.
pub fn default_client_config() -> Result<TlsClientConfig> {
    DEFAULT
        .get_or_init(|| {
            let loaded = load(&TlsSettings::default());
            if let Err(why) = &loaded {
                tracing::warn!("TLS connections without a CA are refused: {why}");
            }
            loaded
        })
        .clone()
        .map_err(Error::NoTrustRoots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_does_not_load_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        for path in [dir.path().join("missing.pem"), junk] {
            let settings = TlsSettings {
                ca_file: path.display().to_string(),
            };
            let err = load(&settings).expect_err("refused");
            assert!(err.contains(&settings.ca_file), "{err}");
        }
    }
}
