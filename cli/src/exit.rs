//! The documented exit codes, the errors that select them, and the `hint:` lines printed after
//! an error.
//!
//! 0 success, 1 error, 2 usage (clap), 3 a saga came to rest in an unexpected state, 4 timed out.

use std::fmt;
use std::time::Duration;

use ridesaga_schemas::duration::format_duration;

/// Success.
pub const SUCCESS: u8 = 0;
/// Any error not listed below.
pub const ERROR: u8 = 1;
/// Bad usage; clap reports these itself with this code.
pub const USAGE: u8 = 2;
/// A saga came to rest in a state other than the expected one.
pub const UNEXPECTED_STATE: u8 = 3;
/// Waiting timed out.
pub const TIMED_OUT: u8 = 4;

/// A saga came to rest in a state other than the one given with `--expect`.
#[derive(Debug)]
pub struct UnexpectedState {
    pub ride: String,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for UnexpectedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ride {} is {}, expected {}",
            self.ride, self.actual, self.expected
        )
    }
}

impl std::error::Error for UnexpectedState {}

/// Waiting for something took longer than allowed.
#[derive(Debug)]
pub struct TimedOut {
    /// What was awaited, e.g. "ride r_1 to come to rest".
    pub waiting_for: String,
    pub after: Duration,
    /// What was seen last, e.g. "last state: requested".
    pub last_seen: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {} waiting for {} ({})",
            format_duration(self.after),
            self.waiting_for,
            self.last_seen
        )
    }
}

impl std::error::Error for TimedOut {}

/// Extension to attach a hint to any error without changing its message.
pub trait HintExt<T> {
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E> HintExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| attach_hint(e.into(), hint.into()))
    }
}

/// Hints travel beside the error (not in its chain) so the printed chain stays the real cause.
fn attach_hint(error: anyhow::Error, hint: String) -> anyhow::Error {
    anyhow::Error::new(WithHint { error, hint })
}

#[derive(Debug)]
struct WithHint {
    error: anyhow::Error,
    hint: String,
}

impl fmt::Display for WithHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the top message: the causes follow through `source`, as for any other error.
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for WithHint {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The whole cause chain on one line, like `{:#}`, but without repeating a cause that the
/// message before it already quotes (NATS client errors often include their source).
pub fn chain_text(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The exit code for an error: the first recognised cause in the chain decides.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let mut current: Option<&anyhow::Error> = Some(error);
    while let Some(err) = current {
        if err.is::<UnexpectedState>() {
            return UNEXPECTED_STATE;
        }
        if err.is::<TimedOut>() {
            return TIMED_OUT;
        }
        current = err.downcast_ref::<WithHint>().map(|w| &w.error);
    }
    for cause in error.chain() {
        if cause.is::<UnexpectedState>() {
            return UNEXPECTED_STATE;
        }
        if cause.is::<TimedOut>() {
            return TIMED_OUT;
        }
    }
    ERROR
}

/// The hints attached to an error, outermost first, plus generic advice recognised from the
/// causes (an unreachable server, a missing stream).
pub fn hints(error: &anyhow::Error) -> Vec<String> {
    let mut hints = Vec::new();
    let mut current: Option<&anyhow::Error> = Some(error);
    while let Some(err) = current {
        match err.downcast_ref::<WithHint>() {
            Some(with) => {
                hints.push(with.hint.clone());
                current = Some(&with.error);
            }
            None => current = None,
        }
    }
    if hints.is_empty() {
        let text = format!("{error:#}").to_lowercase();
        if text.contains("authorization violation") {
            hints.push(
                "the server refused the credentials: give this installation's seed with --nkey \
                 or NATS_NKEY_FILE (`source .run/env` after scripts/up)"
                    .into(),
            );
        } else if text.contains("certificate") {
            hints.push(
                "the server's certificate is not trusted: give its CA with --tls-ca or \
                 NATS_CA_FILE (`source .run/env` after scripts/up --tls)"
                    .into(),
            );
        } else if text.contains("connection refused") || text.contains("could not connect") {
            hints.push(
                "is nats-server running? Check --server or NATS_URL (`source .run/env` after \
                 scripts/up)"
                    .into(),
            );
        } else if text.contains("stream not found") || text.contains("no responders") {
            hints.push("the streams may not exist yet: run `ridectl provision`".into());
        }
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn each_outcome_maps_to_its_exit_code() {
        let plain = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&plain), ERROR);

        let mismatch = anyhow::Error::new(UnexpectedState {
            ride: "r_1".into(),
            expected: "confirmed".into(),
            actual: "cancelled (payment_declined)".into(),
        });
        assert_eq!(exit_code(&mismatch), UNEXPECTED_STATE);

        let timeout: anyhow::Result<()> = Err(TimedOut {
            waiting_for: "ride r_1 to come to rest".into(),
            after: Duration::from_secs(1),
            last_seen: "last state: requested".into(),
        }
        .into());
        let wrapped = timeout.context("ride request").unwrap_err();
        assert_eq!(exit_code(&wrapped), TIMED_OUT);
    }

    #[test]
    fn refused_credentials_and_an_untrusted_certificate_have_hints_of_their_own() {
        for (cause, hint) in [
            ("authorization violation", "--nkey"),
            (
                "IO error: invalid peer certificate: UnknownIssuer",
                "--tls-ca",
            ),
        ] {
            let err = anyhow::anyhow!("{cause}").context("could not connect to nats://x");
            let found = hints(&err);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains(hint), "{found:?}");
        }
    }

    #[test]
    fn hints_do_not_change_the_message_or_the_code() {
        let err: anyhow::Result<()> = Err(anyhow::Error::new(UnexpectedState {
            ride: "r_1".into(),
            expected: "confirmed".into(),
            actual: "rejected".into(),
        }));
        let err = err.hint("see `ridectl saga trace r_1`").unwrap_err();
        assert_eq!(chain_text(&err), "ride r_1 is rejected, expected confirmed");
        assert_eq!(exit_code(&err), UNEXPECTED_STATE);
        assert_eq!(
            hints(&err),
            vec!["see `ridectl saga trace r_1`".to_string()]
        );
    }

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(io)
            .context("IO error: refused")
            .context("could not connect to nats://x");
        assert_eq!(
            chain_text(&err),
            "could not connect to nats://x: IO error: refused"
        );
        let hinted: anyhow::Result<()> = Err(err);
        let hinted = hinted.hint("start it").unwrap_err();
        assert_eq!(
            chain_text(&hinted),
            "could not connect to nats://x: IO error: refused"
        );
    }

    #[test]
    fn an_unreachable_server_gets_a_generic_hint() {
        let err = anyhow::anyhow!("Connection refused (os error 111)")
            .context("could not connect to nats://127.0.0.1:1");
        assert!(hints(&err)[0].contains("NATS_URL"));
        assert_eq!(exit_code(&err), ERROR);
    }
}
