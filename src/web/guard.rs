//! Who may talk to the dashboard: the pure checks every request passes
//! before a handler runs. The `Host` header must name an address this server
//! answers to and an `Origin`, when sent, must be exactly this server's (both
//! guard against DNS rebinding and cross-site requests); the API wants the
//! access token as `Authorization: Bearer`, or for the page's own event
//! stream a session cookie traded for it. No I/O here: table-tested.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a request is refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` missing or not an address this server answers to (421).
    Host,
    /// `Origin` present and not this server's (403).
    Origin,
    /// No token given (401).
    NoToken,
    /// A token that is not ours (403).
    BadToken,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Host => 421,
            Refusal::Origin | Refusal::BadToken => 403,
            Refusal::NoToken => 401,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Host => "the Host header does not name this dashboard's address",
            Refusal::Origin => "cross-origin requests are refused",
            Refusal::NoToken => {
                "an access token is needed (Authorization: Bearer <state/http.token>)"
            }
            Refusal::BadToken => "wrong access token",
        }
    }
}

/// The authorities (`host:port`) a request's `Host` may name: the loopback
/// names when the server listens on loopback or everywhere, the bound IP
/// itself, and the names the operator allowed for remote access.
pub fn allowed_authorities(bound: SocketAddr, extra_hosts: &[String]) -> Vec<String> {
    let port = bound.port();
    let ip = bound.ip();
    let mut names: Vec<String> = Vec::new();
    if ip.is_loopback() || ip.is_unspecified() {
        names.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
        names.push("[::1]".to_string());
    }
    if !ip.is_unspecified() {
        names.push(match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    names.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
    let mut out: Vec<String> = names.into_iter().map(|n| format!("{n}:{port}")).collect();
    out.dedup();
    out
}

/// The checks, with what they compare against.
#[derive(Debug)]
pub struct Guard {
    authorities: Vec<String>,
    token: String,
}

impl Guard {
    pub fn new(authorities: Vec<String>, token: String) -> Guard {
        Guard { authorities, token }
    }

    /// `Host` must be one of ours, port included; returns it, lower-cased.
    pub fn host(&self, host: Option<&str>) -> Result<String, Refusal> {
        let host = host.ok_or(Refusal::Host)?.trim().to_ascii_lowercase();
        if self.authorities.contains(&host) {
            Ok(host)
        } else {
            Err(Refusal::Host)
        }
    }

    /// An `Origin`, when present, must be exactly `http://<Host>`.
    pub fn origin(&self, origin: Option<&str>, host: &str) -> Result<(), Refusal> {
        match origin {
            None => Ok(()),
            Some(o) if o.eq_ignore_ascii_case(&format!("http://{host}")) => Ok(()),
            Some(_) => Err(Refusal::Origin),
        }
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::NoToken)?.trim();
        let (scheme, given) = value.split_once(' ').ok_or(Refusal::BadToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::NoToken);
        }
        if same_secret(given.trim(), &self.token) {
            Ok(())
        } else {
            Err(Refusal::BadToken)
        }
    }
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "mw_session";

/// The session value in a `Cookie` header, if any.
pub fn session_from_cookies(cookie_header: Option<&str>) -> Option<&str> {
    cookie_header?.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then_some(value)
    })
}

/// Sessions traded for the token, for the page's event stream only: a
/// bounded list (the oldest goes first), each valid for a day.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<VecDeque<(String, Instant)>>,
}

const MAX_SESSIONS: usize = 32;
const SESSION_LIFE: Duration = Duration::from_secs(24 * 3600);

impl Sessions {
    pub fn add(&self, id: String) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, at)| at.elapsed() < SESSION_LIFE);
        while live.len() >= MAX_SESSIONS {
            live.pop_front();
        }
        live.push_back((id, Instant::now()));
    }

    pub fn valid(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .any(|(s, at)| at.elapsed() < SESSION_LIFE && same_secret(s, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let bound: SocketAddr = "127.0.0.1:8765".parse().unwrap();
        Guard::new(allowed_authorities(bound, &[]), "s3cret".into())
    }

    #[test]
    fn host_must_name_the_served_address() {
        let g = guard();
        let cases: [(Option<&str>, bool); 9] = [
            (Some("127.0.0.1:8765"), true),
            (Some("localhost:8765"), true),
            (Some("LOCALHOST:8765"), true),
            (Some("[::1]:8765"), true),
            (Some("127.0.0.1"), false),
            (Some("127.0.0.1:8766"), false),
            (Some("evil.example:8765"), false),
            (Some(""), false),
            (None, false),
        ];
        for (host, ok) in cases {
            assert_eq!(g.host(host).is_ok(), ok, "{host:?}");
        }
    }

    #[test]
    fn remote_binding_allows_only_named_hosts() {
        let bound: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let g = Guard::new(allowed_authorities(bound, &["Box.lan".into()]), "t".into());
        assert!(g.host(Some("box.lan:9000")).is_ok());
        assert!(g.host(Some("localhost:9000")).is_ok());
        assert!(g.host(Some("other.lan:9000")).is_err());
        assert!(g.host(Some("0.0.0.0:9000")).is_err());
    }

    #[test]
    fn origin_must_match_exactly_port_included() {
        let g = guard();
        let host = "127.0.0.1:8765";
        let cases: [(Option<&str>, bool); 7] = [
            (None, true),
            (Some("http://127.0.0.1:8765"), true),
            (Some("http://127.0.0.1:8766"), false),
            (Some("http://127.0.0.1"), false),
            (Some("https://127.0.0.1:8765"), false),
            (Some("http://evil.example"), false),
            (Some("null"), false),
        ];
        for (origin, ok) in cases {
            assert_eq!(g.origin(origin, host).is_ok(), ok, "{origin:?}");
        }
    }

    #[test]
    fn bearer_token_is_checked() {
        let g = guard();
        let cases: [(Option<&str>, Result<(), Refusal>); 7] = [
            (Some("Bearer s3cret"), Ok(())),
            (Some("bearer s3cret"), Ok(())),
            (Some("Bearer s3cre"), Err(Refusal::BadToken)),
            (Some("Bearer s3crett"), Err(Refusal::BadToken)),
            (Some("Basic s3cret"), Err(Refusal::NoToken)),
            (Some("s3cret"), Err(Refusal::BadToken)),
            (None, Err(Refusal::NoToken)),
        ];
        for (header, want) in cases {
            assert_eq!(g.bearer(header), want, "{header:?}");
        }
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let cases = [
            (Some("mw_session=abc"), Some("abc")),
            (Some("a=1; mw_session=abc; b=2"), Some("abc")),
            (Some("mw_sessionx=abc"), None),
            (None, None),
        ];
        for (header, want) in cases {
            assert_eq!(session_from_cookies(header), want, "{header:?}");
        }
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        for i in 0..(MAX_SESSIONS + 5) {
            s.add(format!("id{i}"));
        }
        assert!(!s.valid("id0"), "the oldest session was dropped");
        assert!(s.valid(&format!("id{}", MAX_SESSIONS + 4)));
        assert!(!s.valid("nope"));
    }
}
