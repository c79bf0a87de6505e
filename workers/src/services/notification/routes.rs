//! Which channel reaches riders and which reaches drivers, and where a notification goes once
//! the recipient's contact details are known. Pure: the service decides a notification's
//! route when it becomes due (the route travels with its effect), and this module only says
//! what the configuration and the contact details give.
//!
//! A recipient whose details lack what the configured channel needs (no address for email, no
//! phone number for SMS) is notified through the log channel instead: the notification is
//! still recorded, delivered once and announced by `evt.notification.sent` (whose `channel`
//! says `log`), so the audit holds, and an operator finds it in the JSON-lines log.

use ridesaga_schemas::Recipient;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Settings};

/// A channel a notification can go through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The JSON-lines log (the default).
    #[default]
    Log,
    /// Email over SMTP, to the recipient's address.
    Email,
    /// SMS through the provider's HTTP API, to the recipient's phone number.
    Sms,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Log => "log",
            Via::Email => "email",
            Via::Sms => "sms",
        }
    }
}

impl std::str::FromStr for Via {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "log" => Ok(Via::Log),
            "email" => Ok(Via::Email),
            "sms" => Ok(Via::Sms),
            other => Err(format!("unknown channel {other:?}; use log, email or sms")),
        }
    }
}

/// What the service knows of how to reach a rider or a driver, from their registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Contact {
    /// `self` after a registration that gives `email` and `phone`: a detail given replaces the
    /// one known, one left out keeps it.
    pub fn updated(&self, email: Option<&str>, phone: Option<&str>) -> Contact {
        Contact {
            email: email.map(str::to_owned).or_else(|| self.email.clone()),
            phone: phone.map(str::to_owned).or_else(|| self.phone.clone()),
        }
    }
}

/// The channel configured for each kind of recipient: `RIDESAGA_NOTIFY_RIDER_CHANNEL` and
/// `RIDESAGA_NOTIFY_DRIVER_CHANNEL`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routes {
    pub rider: Via,
    pub driver: Via,
}

/// Where one notification goes: the channel, and the address or number it is sent to there
/// (none for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub via: Via,
    pub to: Option<String>,
}

impl Routes {
    pub const RIDER: &'static str = "RIDESAGA_NOTIFY_RIDER_CHANNEL";
    pub const DRIVER: &'static str = "RIDESAGA_NOTIFY_DRIVER_CHANNEL";

    pub fn load(settings: &Settings) -> Result<Routes, ConfigError> {
        Ok(Routes {
            rider: settings.get(Self::RIDER, Via::Log)?,
            driver: settings.get(Self::DRIVER, Via::Log)?,
        })
    }

    /// The channel configured for `recipient`.
    pub fn of(&self, recipient: Recipient) -> Via {
        match recipient {
            Recipient::Rider => self.rider,
            Recipient::Driver => self.driver,
        }
    }

    /// Where a notification to `recipient`, whose details are `contact` (if any are known),
    /// goes: the configured channel when the details have what it needs, else the log.
    pub fn route(&self, recipient: Recipient, contact: Option<&Contact>) -> Route {
        let log = Route {
            via: Via::Log,
            to: None,
        };
        let via = self.of(recipient);
        let to = match via {
            Via::Log => return log,
            Via::Email => contact.and_then(|c| c.email.clone()),
            Via::Sms => contact.and_then(|c| c.phone.clone()),
        };
        match to {
            Some(to) => Route { via, to: Some(to) },
            None => log,
        }
    }

    /// Whether any recipient's notifications go through `via`.
    pub fn uses(&self, via: Via) -> bool {
        self.rider == via || self.driver == via
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(email: Option<&str>, phone: Option<&str>) -> Contact {
        Contact::default().updated(email, phone)
    }

    #[test]
    fn each_kind_of_recipient_goes_through_its_channel_to_its_address_or_number() {
        let routes = Routes {
            rider: Via::Email,
            driver: Via::Sms,
        };
        let known = contact(Some("ada@example.com"), Some("+4915112345678"));
        assert_eq!(
            routes.route(Recipient::Rider, Some(&known)),
            Route {
                via: Via::Email,
                to: Some("ada@example.com".into())
            }
        );
        assert_eq!(
            routes.route(Recipient::Driver, Some(&known)),
            Route {
                via: Via::Sms,
                to: Some("+4915112345678".into())
            }
        );
    }

    #[test]
    fn a_recipient_without_the_detail_the_channel_needs_is_notified_in_the_log() {
        let routes = Routes {
            rider: Via::Email,
            driver: Via::Sms,
        };
        let phone_only = contact(None, Some("+4915112345678"));
        let log = Route {
            via: Via::Log,
            to: None,
        };
        assert_eq!(routes.route(Recipient::Rider, Some(&phone_only)), log);
        assert_eq!(routes.route(Recipient::Rider, None), log);
        let email_only = contact(Some("bo@example.com"), None);
        assert_eq!(routes.route(Recipient::Driver, Some(&email_only)), log);
        assert_eq!(
            Routes::default().route(Recipient::Rider, Some(&email_only)),
            log,
            "the default channel is the log, whatever is known"
        );
    }

    #[test]
    fn a_registration_replaces_what_it_gives_and_keeps_the_rest() {
        let first = contact(Some("ada@example.com"), Some("+4915112345678"));
        let moved = first.updated(Some("ada@example.org"), None);
        assert_eq!(moved.email.as_deref(), Some("ada@example.org"));
        assert_eq!(moved.phone.as_deref(), Some("+4915112345678"));
        assert_eq!(moved.updated(None, None), moved);
    }

    #[test]
    fn the_channels_are_read_from_the_settings_and_a_bad_one_is_named() {
        let settings = Settings::from_pairs([(Routes::RIDER, "sms")]);
        let routes = Routes::load(&settings).unwrap();
        assert_eq!((routes.rider, routes.driver), (Via::Sms, Via::Log));
        assert!(routes.uses(Via::Sms) && !routes.uses(Via::Email));
        let bad = Settings::from_pairs([(Routes::DRIVER, "pigeon")]);
        let error = Routes::load(&bad).unwrap_err().to_string();
        assert!(
            error.contains("RIDESAGA_NOTIFY_DRIVER_CHANNEL")
                && error.contains("use log, email or sms"),
            "{error}"
        );
    }
}
