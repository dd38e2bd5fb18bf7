//! The process's exit codes, in one place: what each means, and which errors
//! end the process with which. `main` maps a command's result through
//! [`Exit::of_error`]; the table is printed by `--help` ([`EXIT_CODES`]) and
//! repeated in the README.

use crate::live::args::ArgsError;
use crate::live::capture::CaptureError;
use crate::live::session::SessionError;
use crate::pipeline::ReplayError;
use crate::source::ReadError;

/// How a command ended, as its exit code tells a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done as asked.
    Success,
    /// 1: could not finish (the report could not be written, the capture
    /// failed midway, the server could not listen).
    Failure,
    /// 2: a bad argument or an unreadable input file (clap's usage errors
    /// exit 2 as well).
    BadInput,
    /// 3: no privilege to capture.
    NoPrivilege,
    /// 4: `run`: at least one request failed; the report is still written.
    RequestsFailed,
    /// 5: `demo`: at least one experiment's verdict was UNEXPECTED.
    Unexpected,
    /// `audit`: the command's own exit status (128 + N when signal N ended it).
    Command(u8),
}

/// The exit code table, as `--help` prints it.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  could not finish (writing the report, a capture failing midway, ...)
  2  bad argument or unreadable input file
  3  no privilege to capture
  4  run: at least one request failed (the report is still written)
  5  demo: at least one UNEXPECTED verdict
  audit exits with the command's own status (128+N when signal N ended it),
  or with one of the above when conntrace itself failed";

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::BadInput => 2,
            Exit::NoPrivilege => 3,
            Exit::RequestsFailed => 4,
            Exit::Unexpected => 5,
            Exit::Command(code) => code,
        }
    }

    /// The code an error ends the process with: the first error in its chain
    /// that says.
    pub fn of_error(e: &anyhow::Error) -> Exit {
        e.chain().find_map(Exit::of_cause).unwrap_or(Exit::Failure)
    }

    fn of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<Exit> {
        if let Some(r) = cause.downcast_ref::<Refused>() {
            return Some(r.exit);
        }
        if cause.is::<ReadError>() || cause.is::<ArgsError>() {
            return Some(Exit::BadInput);
        }
        if let Some(e) = cause.downcast_ref::<ReplayError>() {
            return Some(match e {
                ReplayError::Write(_) => Exit::Failure,
                _ => Exit::BadInput,
            });
        }
        if let Some(e) = cause.downcast_ref::<CaptureError>() {
            return match e {
                CaptureError::Permission { .. } => Some(Exit::NoPrivilege),
                CaptureError::Filter { .. } | CaptureError::NoInterface { .. } => {
                    Some(Exit::BadInput)
                }
                _ => Some(Exit::Failure),
            };
        }
        if let Some(SessionError::Target { .. }) = cause.downcast_ref::<SessionError>() {
            return Some(Exit::BadInput);
        }
        None
    }
}

/// A refusal in one message that chooses its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub exit: Exit,
    pub message: String,
}

impl Refused {
    /// A bad argument or input file.
    pub fn bad_input(message: impl Into<String>) -> Refused {
        Refused {
            exit: Exit::BadInput,
            message: message.into(),
        }
    }

    /// No privilege to capture.
    pub fn no_privilege(message: impl Into<String>) -> Refused {
        Refused {
            exit: Exit::NoPrivilege,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Exit::Success,
            Exit::Failure,
            Exit::BadInput,
            Exit::NoPrivilege,
            Exit::RequestsFailed,
            Exit::Unexpected,
        ];
        let mut codes: Vec<u8> = all.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for e in all {
            assert!(EXIT_CODES.contains(&format!("  {}  ", e.code())), "{e:?}");
        }
    }

    #[test]
    fn errors_are_classified_through_their_chain() {
        let read = ReadError::Corrupt {
            path: "x.pcap".into(),
            what: "bad".into(),
            offset: 0,
        };
        let e = anyhow::Error::new(read).context("replaying");
        assert_eq!(Exit::of_error(&e), Exit::BadInput);
        let e = anyhow::Error::new(Refused::no_privilege("no"));
        assert_eq!(Exit::of_error(&e), Exit::NoPrivilege);
        assert_eq!(Exit::of_error(&anyhow::anyhow!("other")), Exit::Failure);
    }
}
