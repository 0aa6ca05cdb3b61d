//! Errors that stop a sweep before it starts (bad configuration). Outcomes of
//! individual probes are never errors: they are `ProbeResult` data.

use std::path::PathBuf;

/// Why a [`super::Prober`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The `--ca` file could not be read.
    #[error("read CA file {}", path.display())]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The `--ca` file was read but holds no usable certificate.
    #[error("CA file {}: {reason}", path.display())]
    CaFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS client configuration could not be built.
    #[error("set up the TLS client")]
    TlsSetup(#[source] rustls::Error),
    /// `concurrency` was 0, which would never probe anything.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
}
