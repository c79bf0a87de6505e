//! Loopback ports for servers that a test stops and starts again on the same address.
//!
//! A port the kernel picks for `bind(0)` lies in its ephemeral range, the range it also takes
//! the local port of every outgoing connection from. While a server is down for a fault test,
//! any connection opened meanwhile (a test binary opens many) may take its port, and the
//! restart fails with "address already in use". The ports chosen here lie below that range,
//! where only explicit binds land, start at a random place, and are never handed out twice by
//! one process. Another process may still bind one first; starts retry with new ports then.

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    net::TcpListener,
    sync::Mutex,
};

use crate::Error;

/// The lowest port chosen: above the well-known and most registered services' ports.
const LOWEST: u16 = 10_000;
/// How many ports the range must hold for choosing below the ephemeral range to be worth it.
const ENOUGH: u16 = 1_000;
/// Where Linux keeps the ephemeral range.
const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Ports handed out by this process, never reused by it.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `n` distinct loopback ports, free right now, below the ephemeral range.
pub fn free(n: usize) -> Result<Vec<u16>, Error> {
    let Some((low, high)) = range_below_ephemeral() else {
        return kernel_chosen(n);
    };
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let span = u64::from(high - low);
    let start = RandomState::new().hash_one(std::process::id()) % span;
    // Held until all `n` are chosen, so no two of them are the same port.
    let mut held = Vec::with_capacity(n);
    for offset in 0..span {
        if held.len() == n {
            break;
        }
        let port = low + u16::try_from((start + offset) % span).expect("below u16::MAX");
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    if held.len() < n {
        return Err(Error::Io {
            action: format!("find {n} free loopback ports in {low}..{high}"),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
    }
    let ports: Vec<u16> = held.into_iter().map(|(port, _)| port).collect();
    given.extend(&ports);
    Ok(ports)
}

/// One port, as [`free`].
pub fn free_one() -> Result<u16, Error> {
    Ok(free(1)?[0])
}

/// `LOWEST..` the start of the ephemeral range, if the system says where that is and it leaves
/// room.
fn range_below_ephemeral() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(EPHEMERAL_RANGE).ok()?;
    let start: u16 = text.split_whitespace().next()?.parse().ok()?;
    (start >= LOWEST + ENOUGH).then_some((LOWEST, start))
}

/// Ports the kernel picks, where the ephemeral range cannot be read or leaves no room below.
fn kernel_chosen(n: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::io("find free loopback ports"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::io("read a listener's port"))
}

/// How many times a server is started with new ports when another process took one first.
pub(crate) const START_ATTEMPTS: usize = 3;

/// Whether a start failed because another process bound one of its ports first: worth another
/// attempt with new ports.
pub(crate) fn taken(error: &Error) -> bool {
    error
        .to_string()
        .to_ascii_lowercase()
        .contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_never_given_twice() {
        let first = free(8).unwrap();
        let second = free(8).unwrap();
        let all: HashSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 16);
        if let Some((low, high)) = range_below_ephemeral() {
            for port in all {
                assert!((low..high).contains(&port), "{port} outside {low}..{high}");
            }
        }
    }
}
