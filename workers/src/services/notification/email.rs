//! The email channel: one plain-text message per notification, sent over SMTP with `lettre`
//! (a session per message, no pool), to the address the recipient registered.
//!
//! The message's `Message-ID` is made from the id of the notification's
//! `evt.notification.sent` (`<id@domain of the sender>`), so every attempt at one
//! notification sends the same message: mail clients and archives drop a second copy by it.
//! A message this channel sent is not sent again by it (it remembers the ids it sent lately),
//! so only a crash between the server's acceptance and the settling of the delivery, or an
//! attempt that timed out after the server accepted it, sends a second copy, with the same
//! `Message-ID`. A server that answers with a permanent reply (5xx: no such mailbox, sender
//! refused) refuses the notification for good; no answer, a timeout or a 4xx reply is worth
//! another attempt.

use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use ridesaga_schemas::{MessageId, NotificationKind};

use super::channel::{Channel, ChannelError, Delivery, Written};
use crate::config::{ConfigError, Secret, Settings};

/// How the connection to the SMTP server is protected: `RIDESAGA_SMTP_TLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP: a local relay or a test server only.
    None,
    /// Plain, then upgraded with STARTTLS, which the server must offer (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl std::str::FromStr for SmtpTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(SmtpTls::None),
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            other => Err(format!("{other:?}: use none, starttls or tls")),
        }
    }
}

/// The SMTP server and the sender: `RIDESAGA_SMTP_*`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User and password, when the server wants a login.
    pub credentials: Option<(String, Secret)>,
    pub from: Mailbox,
    /// How long one session (connect, send, quit) may take.
    pub timeout: Duration,
}

impl EmailConfig {
    /// The SMTP settings, if `RIDESAGA_SMTP_HOST` is set.
    pub fn load(settings: &Settings) -> Result<Option<EmailConfig>, ConfigError> {
        let Some(host) = settings.raw("RIDESAGA_SMTP_HOST") else {
            return Ok(None);
        };
        let tls: SmtpTls = settings.get("RIDESAGA_SMTP_TLS", SmtpTls::StartTls)?;
        let default_port = match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        };
        let port = settings.get("RIDESAGA_SMTP_PORT", default_port)?;
        let from_setting = "RIDESAGA_SMTP_FROM";
        let from_text = settings.raw(from_setting).ok_or_else(|| ConfigError {
            name: from_setting.into(),
            value: String::new(),
            problem: "the sender's address is needed with RIDESAGA_SMTP_HOST".into(),
        })?;
        let from: Mailbox = from_text.parse().map_err(|e| ConfigError {
            name: from_setting.into(),
            value: from_text.clone(),
            problem: format!("not a mailbox: {e}"),
        })?;
        let password = settings.secret_or_file("RIDESAGA_SMTP_PASSWORD")?;
        let credentials = match (settings.raw("RIDESAGA_SMTP_USER"), password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(user), None) => {
                return Err(ConfigError {
                    name: "RIDESAGA_SMTP_USER".into(),
                    value: user,
                    problem: "a user needs RIDESAGA_SMTP_PASSWORD or RIDESAGA_SMTP_PASSWORD_FILE"
                        .into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "RIDESAGA_SMTP_PASSWORD".into(),
                    value: "***".into(),
                    problem: "a password needs RIDESAGA_SMTP_USER".into(),
                });
            }
        };
        let timeout = settings.duration("RIDESAGA_SMTP_TIMEOUT", Duration::from_secs(10))?;
        Ok(Some(EmailConfig {
            host,
            port,
            tls,
            credentials,
            from,
            timeout,
        }))
    }
}

/// The email channel.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of the `Message-ID`s: the sender's domain.
    domain: String,
    sent: Mutex<Written>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("from", &self.from.email.to_string())
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    pub fn new(config: &EmailConfig) -> Result<EmailChannel, ConfigError> {
        let tls_error = |e: lettre::transport::smtp::Error| ConfigError {
            name: "RIDESAGA_SMTP_TLS".into(),
            value: format!("{:?}", config.tls),
            problem: e.to_string(),
        };
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(tls_error)?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(tls_error)?
            }
        };
        let domain = config.from.email.domain().to_owned();
        let mut builder = builder
            .port(config.port)
            .timeout(Some(config.timeout))
            .hello_name(ClientId::Domain(domain.clone()));
        if let Some((user, password)) = &config.credentials {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(EmailChannel {
            transport: builder.build(),
            from: config.from.clone(),
            domain,
            sent: Mutex::default(),
        })
    }

    /// The `Message-ID` of the notification whose event has `id`.
    pub fn message_id(&self, id: &MessageId) -> String {
        format!("<{id}@{}>", self.domain)
    }

    /// The message for `delivery`, to `to`.
    fn message(&self, delivery: &Delivery<'_>, to: &str) -> Result<Message, ChannelError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| self.refused(format!("not an address: {e}")))?;
        Message::builder()
            .message_id(Some(self.message_id(delivery.id)))
            .from(self.from.clone())
            .to(to)
            .subject(subject(delivery.notice.kind, delivery.ride_id.as_str()))
            .header(ContentType::TEXT_PLAIN)
            .body(format!("{}\n", delivery.notice.text))
            .map_err(|e| self.refused(e))
    }

    fn refused(&self, problem: impl std::fmt::Display) -> ChannelError {
        ChannelError {
            channel: "email",
            problem: problem.to_string(),
            permanent: true,
        }
    }
}

/// A notification's subject line.
pub fn subject(kind: NotificationKind, ride: &str) -> String {
    let what = match kind {
        NotificationKind::DriverAssigned => "your driver",
        NotificationKind::RideConfirmed => "confirmed",
        NotificationKind::RideCancelled => "cancelled",
        NotificationKind::RideRejected => "not accepted",
        NotificationKind::Receipt => "receipt",
        NotificationKind::PaymentFailed => "payment",
        NotificationKind::Refund => "refund",
    };
    format!("Ride {ride}: {what}")
}

impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Option<String>, ChannelError> {
        let message_id = self.message_id(delivery.id);
        let to = delivery
            .to
            .ok_or_else(|| self.refused("no address to send to"))?;
        if self
            .sent
            .lock()
            .is_ok_and(|sent| sent.contains(delivery.id))
        {
            return Ok(Some(message_id));
        }
        let message = self.message(delivery, to)?;
        match self.transport.send(message).await {
            Ok(_) => {
                if let Ok(mut sent) = self.sent.lock() {
                    sent.insert(delivery.id.clone());
                }
                Ok(Some(message_id))
            }
            Err(e) => Err(ChannelError {
                channel: "email",
                problem: e.to_string(),
                permanent: e.is_permanent(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smtp_settings_need_a_sender_and_take_the_port_of_their_tls_mode() {
        let none = Settings::from_pairs(Vec::<(String, String)>::new());
        assert!(EmailConfig::load(&none).unwrap().is_none());
        let no_from = Settings::from_pairs([("RIDESAGA_SMTP_HOST", "smtp.example.com")]);
        let error = EmailConfig::load(&no_from).unwrap_err().to_string();
        assert!(error.contains("RIDESAGA_SMTP_FROM"), "{error}");
        let ok = no_from.with("RIDESAGA_SMTP_FROM", "Ridesaga <rides@example.com>");
        let config = EmailConfig::load(&ok).unwrap().unwrap();
        assert_eq!((config.tls, config.port), (SmtpTls::StartTls, 587));
        let tls = ok.clone().with("RIDESAGA_SMTP_TLS", "tls");
        assert_eq!(EmailConfig::load(&tls).unwrap().unwrap().port, 465);
        let user_only = ok.clone().with("RIDESAGA_SMTP_USER", "rides");
        let error = EmailConfig::load(&user_only).unwrap_err().to_string();
        assert!(error.contains("RIDESAGA_SMTP_PASSWORD_FILE"), "{error}");
        let bad_mode = ok.with("RIDESAGA_SMTP_TLS", "ssl3");
        assert!(EmailConfig::load(&bad_mode).is_err());
    }

    #[test]
    fn the_password_comes_from_a_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let settings = Settings::from_pairs([
            ("RIDESAGA_SMTP_HOST", "smtp.example.com"),
            ("RIDESAGA_SMTP_FROM", "rides@example.com"),
            ("RIDESAGA_SMTP_USER", "rides"),
            ("RIDESAGA_SMTP_PASSWORD_FILE", file.to_str().unwrap()),
        ]);
        let config = EmailConfig::load(&settings).unwrap().unwrap();
        let (user, password) = config.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("rides", "s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_notification_s_message_id_is_its_event_s_at_the_sender_s_domain() {
        let settings = Settings::from_pairs([
            ("RIDESAGA_SMTP_HOST", "127.0.0.1"),
            ("RIDESAGA_SMTP_TLS", "none"),
            ("RIDESAGA_SMTP_FROM", "Ridesaga <rides@mail.example.com>"),
        ]);
        let channel = EmailChannel::new(&EmailConfig::load(&settings).unwrap().unwrap()).unwrap();
        let id = MessageId::parse("m_42").unwrap();
        assert_eq!(channel.message_id(&id), "<m_42@mail.example.com>");
        assert_eq!(
            subject(NotificationKind::Receipt, "r_1"),
            "Ride r_1: receipt"
        );
    }
}
