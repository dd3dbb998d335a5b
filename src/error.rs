//! The library's one error type.
//!
//! Coarse semantic categories (as polars does) so callers can match on *what kind* of thing
//! went wrong, each carrying enough context (file, key path, column, row) that the message
//! alone tells a user what to fix. Binaries wrap these in `anyhow` only at the edge.

use std::path::{Path, PathBuf};

/// Every fallible function in the library returns this.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem: bad override, unknown key, wrong type, invalid value.
    /// `key` is the dotted key path; `origin` names the file or override it came from.
    #[error("config error at `{key}`{}: {msg}", fmt_origin(origin))]
    Config {
        key: String,
        origin: Option<String>,
        msg: String,
    },

    /// A file lacks a column its schema requires.
    #[error("{}: column `{column}` not found{}", path.display(), fmt_hint(hint))]
    ColumnNotFound {
        path: PathBuf,
        column: String,
        hint: Option<String>,
    },

    /// A file's structure does not match its schema (extra/duplicated columns, wrong
    /// version, a JSON field of the wrong type, ...).
    #[error("{}: schema mismatch: {msg}", path.display())]
    SchemaMismatch { path: PathBuf, msg: String },

    /// One value in a data file is invalid (unparsable, NaN, negative, out of order, ...).
    /// `row` is 1-based over data rows (the header is row 0).
    #[error("{}: row {row}, column `{column}`: {msg}", path.display())]
    InvalidValue {
        path: PathBuf,
        row: usize,
        column: String,
        msg: String,
    },

    /// A file could not be parsed at all (malformed YAML/JSON/CSV).
    #[error("{}: {msg}", path.display())]
    Parse { path: PathBuf, msg: String },

    /// An input the stage needs does not exist or is incomplete. `hint` says how to make it
    /// (typically the exact command that produces it).
    #[error("{}: {msg}{}", path.display(), fmt_hint(hint))]
    MissingInput {
        path: PathBuf,
        msg: String,
        hint: Option<String>,
    },

    /// Two inputs that must agree do not (runs from different workloads, a bundle for another
    /// model, KV pools of different sizes, ...).
    #[error("mismatch: {0}")]
    Mismatch(String),

    /// A value is outside what the component can handle (prompt longer than the context,
    /// batch larger than a grid with extrapolation disabled, ...).
    #[error("out of range: {0}")]
    OutOfRange(String),

    /// Invalid arguments to a library call or invalid derived state.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Tokenizer failures (loading or encoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Errors from candle (tensor shape, dtype, device, safetensors).
    #[error("model: {0}")]
    #[cfg(feature = "engine")]
    Candle(#[from] candle_core::Error),

    /// The compute device could not be opened or a driver call on it failed (no CUDA driver
    /// library, no GPU at that ordinal, a failed CUDA event, ...).
    #[error("device: {0}")]
    Device(String),

    /// An OS-level IO failure on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A stage or feature this build left out (`--no-default-features`), named with the
    /// cargo feature that brings it back.
    #[error("{what} is not in this build: build with the `{feature}` feature (a default feature; drop --no-default-features or add --features {feature})")]
    NotBuilt { what: String, feature: &'static str },

    /// Anything else, with a message that stands on its own.
    #[error("{0}")]
    Msg(String),
}

fn fmt_origin(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" (from {o})"))
        .unwrap_or_default()
}

fn fmt_hint(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
}

impl Error {
    /// Wraps an IO error with the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A config error without a known origin.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            origin: None,
            msg: msg.into(),
        }
    }

    /// A parse error on a file.
    pub fn parse(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Parse {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Extension to attach a path to `std::io::Result`s.
pub trait IoContext<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Returns early with an [`Error`]: `bail!(Mismatch: "a {} b", x)` or `bail!("msg {}", x)`.
#[macro_export]
macro_rules! bail {
    ($variant:ident: $($arg:tt)+) => {
        return Err($crate::Error::$variant(format!($($arg)+)))
    };
    ($($arg:tt)+) => {
        return Err($crate::Error::Msg(format!($($arg)+)))
    };
}

/// `ensure!(cond, Variant: "fmt", args)` — like `bail!` when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($rest:tt)+) => {
        if !$cond {
            $crate::bail!($($rest)+);
        }
    };
}
