use std::fmt;
use std::io;
use std::path::PathBuf;

/// What can go wrong in a model run.
#[derive(Debug)]
pub enum Error {
    /// A parameter is out of its range; the message names it.
    Params(String),
    /// A quantity outgrew 64 bits (absurd growth over many months).
    Overflow { scenario: &'static str, month: u32 },
    /// Writing an output file or creating the output folder failed.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Params(msg) => write!(f, "{msg}"),
            Error::Overflow { scenario, month } => write!(
                f,
                "scenario {scenario} outgrew the model's 64-bit quantities at month {month}: \
                 lower --months or --growth"
            ),
            Error::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
