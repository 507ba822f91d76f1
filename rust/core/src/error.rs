//! The core's error: what the binding raises as `ValueError` or `TypeError`.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A value out of range, a shape or pattern that does not fit (Python `ValueError`).
    Value(String),
    /// A value of the wrong kind, e.g. a float where a count is expected (`TypeError`).
    Type(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn value_error(msg: impl Into<String>) -> Error {
    Error::Value(msg.into())
}

pub fn type_error(msg: impl Into<String>) -> Error {
    Error::Type(msg.into())
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::Value(m) | Error::Type(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}
