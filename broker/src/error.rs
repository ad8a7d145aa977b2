//! Why the broker could not do what was asked: one typed error for the
//! library, and the one place it becomes an error code on the wire.
//!
//! A response that carries a [`BrokerError`] carries [`BrokerError::code`]
//! and its `Display` as the message; nothing else picks a code for one.
//! Clients act on these codes and their tests pin the messages, so a
//! variant's code and text are part of the protocol: a new situation gets a
//! new variant, never a new meaning for an old one. Each message is whole
//! on its own (no variant marks a `#[source]`), so printing the chain of
//! causes, as the binary does, never says a cause twice.

use std::path::PathBuf;

use rill_client::ClientError;
use rill_client::protocol::ErrorCode;
use rill_replication::{BrokerId, ReplicationError};

/// Why the broker could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No broker is known to lead the controller group (or the Raft thread
    /// has stopped): the client retries later.
    #[error(
        "no controller leader is known: a majority of the controller's brokers must be up and reach each other (rill cluster status shows which are down)"
    )]
    NoController,
    /// Another broker leads the controller, and the Raft thread sent it
    /// this broker's registration over the authenticated peer connection:
    /// the caller checks the metadata again later.
    #[error("sent to the controller ({leader:?}) over the peer connection")]
    RegistrationSent {
        /// The controller's leader as known here.
        leader: Option<BrokerId>,
    },
    /// The controller's leader is known but its client address is not in
    /// the metadata yet, so a request cannot be forwarded to it.
    #[error("the controller (broker {controller}) has not registered its address yet; retry")]
    ControllerUnregistered {
        /// The controller's leader.
        controller: BrokerId,
    },
    /// Forwarding a request to the controller failed on the way: no
    /// connection, or no answer in time.
    #[error(
        "the controller's leader at {addr} cannot be reached ({error}): another is elected once a majority of the controller's brokers are up and reach each other"
    )]
    Forward {
        /// The controller's client address.
        addr: String,
        /// What the connection said.
        error: ClientError,
    },
    /// The controller answered a forwarded request with no result.
    #[error("empty answer from the controller")]
    EmptyAnswer,
    /// The controller answered a forwarded request with another API's
    /// response.
    #[error("unexpected answer from the controller")]
    UnexpectedAnswer,
    /// The controller did not apply a change in time.
    #[error("the controller did not apply the {what} in time")]
    TimedOut {
        /// What was waited for: "change", "registration".
        what: &'static str,
    },
    /// The controller refused the change, with the code and message it
    /// gave (here, or at the controller a request was forwarded to).
    #[error("{message}")]
    Refused {
        /// The controller's code.
        code: ErrorCode,
        /// The controller's explanation.
        message: String,
    },
    /// A produce's proposal failed in a way a retry elsewhere does not fix.
    #[error(transparent)]
    Storage(ReplicationError),
    /// The settings file could not be read.
    #[error("{}: {error}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The settings file is not valid TOML for [`crate::config::FileConfig`].
    #[error("{}: {error}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: toml::de::Error,
    },
    /// The settings, from flags and the file together, contradict each
    /// other or are out of range.
    #[error("{0}")]
    InvalidSettings(String),
}

impl BrokerError {
    /// The code a response carrying this error gives.
    pub fn code(&self) -> ErrorCode {
        match self {
            // A client that reached a broker which cannot reach the
            // controller retries, possibly elsewhere: the same code as
            // "not the controller" tells it to.
            BrokerError::NoController
            | BrokerError::RegistrationSent { .. }
            | BrokerError::ControllerUnregistered { .. }
            | BrokerError::Forward { .. } => ErrorCode::NotController,
            BrokerError::EmptyAnswer | BrokerError::UnexpectedAnswer => ErrorCode::Unknown,
            BrokerError::TimedOut { .. } => ErrorCode::RequestTimedOut,
            BrokerError::Refused { code, .. } => *code,
            BrokerError::Storage(ReplicationError::OutOfOrderSequence { .. }) => {
                ErrorCode::OutOfOrderSequence
            }
            BrokerError::Storage(ReplicationError::ProducerFenced { .. }) => {
                ErrorCode::ProducerFenced
            }
            BrokerError::Storage(_) => ErrorCode::StorageError,
            // Settings stop the broker before it serves anyone; no client
            // ever sees these.
            BrokerError::ConfigRead { .. }
            | BrokerError::ConfigParse { .. }
            | BrokerError::InvalidSettings(_) => ErrorCode::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_clients_see_stay_as_they_were() {
        let cases = [
            (
                BrokerError::NoController,
                ErrorCode::NotController,
                "no controller leader is known: a majority of the controller's brokers must be up and reach each other (rill cluster status shows which are down)",
            ),
            (
                BrokerError::RegistrationSent {
                    leader: Some(BrokerId(2)),
                },
                ErrorCode::NotController,
                "sent to the controller (Some(BrokerId(2))) over the peer connection",
            ),
            (
                BrokerError::ControllerUnregistered {
                    controller: BrokerId(3),
                },
                ErrorCode::NotController,
                "the controller (broker 3) has not registered its address yet; retry",
            ),
            (
                BrokerError::Forward {
                    addr: "h:1".into(),
                    error: ClientError::Closed { addr: "h:1".into() },
                },
                ErrorCode::NotController,
                "the controller's leader at h:1 cannot be reached (connection to h:1 closed): another is elected once a majority of the controller's brokers are up and reach each other",
            ),
            (
                BrokerError::EmptyAnswer,
                ErrorCode::Unknown,
                "empty answer from the controller",
            ),
            (
                BrokerError::UnexpectedAnswer,
                ErrorCode::Unknown,
                "unexpected answer from the controller",
            ),
            (
                BrokerError::TimedOut { what: "change" },
                ErrorCode::RequestTimedOut,
                "the controller did not apply the change in time",
            ),
            (
                BrokerError::TimedOut {
                    what: "registration",
                },
                ErrorCode::RequestTimedOut,
                "the controller did not apply the registration in time",
            ),
            (
                BrokerError::Refused {
                    code: ErrorCode::TopicAlreadyExists,
                    message: "topic t exists".into(),
                },
                ErrorCode::TopicAlreadyExists,
                "topic t exists",
            ),
            (
                BrokerError::InvalidSettings("broker ids start at 1".into()),
                ErrorCode::Unknown,
                "broker ids start at 1",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.to_string(), message);
        }
    }
}
