//! The one error type of the WSO2 reader: why an installation could not be
//! read, with the `file:line:col` of a malformed setting.

use super::source::Source;

/// Why an installation could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An argument is not `HOST=PRODUCT_HOME`.
    #[error("`{arg}` is not HOST=PRODUCT_HOME")]
    BadArgument {
        /// The argument as given.
        arg: String,
    },
    /// Two arguments name the same host.
    #[error("host `{host}` is given twice")]
    DuplicateHost {
        /// The host.
        host: String,
    },
    /// The product home holds none of the files portcall reads.
    #[error(
        "{home}: no repository/conf/carbon.xml, api-manager.xml, deployment.toml or axis2/axis2.xml, nor conf/worker/deployment.yaml found"
    )]
    NotAnInstallation {
        /// The product home as given.
        home: String,
    },
    /// A file could not be read.
    #[error("read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is a FIFO, a device, a socket or a directory.
    #[error("{path}: not a regular file ({kind}); a configuration file must be one")]
    NotRegular {
        /// The file.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A configuration file is larger than
    /// [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES).
    #[error("{path}: larger than {limit} bytes, too large for a configuration file")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is not well-formed XML or TOML, or a value has the wrong type.
    #[error("{at}: {message}")]
    Malformed {
        /// Where, `file:line:col`.
        at: Source,
        /// What is wrong.
        message: String,
    },
    /// The plan given with `--plan` is not valid.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}
