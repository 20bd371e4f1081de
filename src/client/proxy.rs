//! Reaching the gateway through a proxy: which proxy a connection uses (the `proxy` option,
//! else the environment as curl reads it), and opening the tunnel through it (HTTP `CONNECT`
//! with Basic authentication, or SOCKS5 after RFC 1928 with RFC 1929's user and password).
//!
//! The tunnel carries the connection's bytes as they are: TLS runs end to end through it, so
//! the proxy sees the gateway's name and port and nothing else. The gateway's name is always
//! sent to the proxy as a name (SOCKS5 address type 3), so the proxy resolves it.

use std::fmt;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::errors::ErrorCode;
use crate::session::{ErrorDetail, SessionError};

/// The protocol spoken to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS version 5.
    Socks5,
}

/// A proxy: where it listens, how to speak to it, and the credentials it asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// User and password, percent-decoded.
    credentials: Option<(String, String)>,
}

/// Shows the proxy as its URL without the password, which must not reach logs.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl Proxy {
    /// Reads `http://[user:pass@]host[:port]` or `socks5://[user:pass@]host[:port]`
    /// (`socks5h://` is taken as `socks5://`: the proxy resolves the gateway's name either
    /// way). The port defaults to 80 for HTTP and 1080 for SOCKS5. User and password may be
    /// percent-encoded. The error says what is wrong without repeating a password.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!(
                "proxy {:?} is not a URL (http://host:port or socks5://host:port)",
                redact(url)
            )
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "socks5" | "socks5h" => Scheme::Socks5,
            other => {
                return Err(format!(
                    "proxy scheme {other:?} is not supported (http or socks5)"
                ))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "proxy {:?} has a path; give only host and port",
                redact(url)
            ));
        }
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user)?;
                let pass = percent_decode(pass)?;
                if user.len() > 255 || pass.len() > 255 {
                    return Err("proxy user and password must be at most 255 bytes each".into());
                }
                (Some((user, pass)), authority)
            }
            None => (None, rest),
        };
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Socks5 => 1080,
        };
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("proxy {:?}: cannot read host and port", redact(url)))?;
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("proxy {:?}: bad port {port:?}", redact(url)))?,
        };
        if host.is_empty() {
            return Err(format!("proxy {:?} has no host", redact(url)));
        }
        Ok(Proxy {
            scheme,
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// The proxy's URL, with `***` for a password.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Socks5 => "socks5",
        };
        let user = match &self.credentials {
            Some((user, _)) => format!("{user}:***@"),
            None => String::new(),
        };
        format!("{scheme}://{user}{}", authority(&self.host, self.port))
    }
}

/// `url` with the password of its user information replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, authority)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{authority}")
        }
        _ => url.to_owned(),
    }
}

/// `%XX` sequences decoded (a user or password in a URL); the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = crate::percent::decode(text).ok_or("proxy credentials hold a bad %-escape")?;
    String::from_utf8(bytes).map_err(|_| "proxy credentials are not UTF-8 once decoded".to_owned())
}

/// `host:port`, `[v6]:port`, `host`, `[v6]` or a bare IPv6 address, split; the host without
/// brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.matches(':').count() {
        0 => Some((authority, None)),
        1 => authority
            .split_once(':')
            .map(|(host, port)| (host, Some(port))),
        // A bare IPv6 address.
        _ => Some((authority, None)),
    }
}

/// `host:port` as a request line and a Host header write it (`[v6]:port` for IPv6).
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The proxy for a TLS connection to `host:port` from the environment, read as curl reads it
/// for an `https://` URL: `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`, the first
/// that is set and not empty, unless `no_proxy` (or `NO_PROXY`) names the host
/// ([`no_proxy_matches`]). `None` when no proxy applies; `Err` when the variable does not
/// read as a proxy URL (the connection then fails: it must not go around the proxy).
pub fn from_environment(
    env: impl Fn(&str) -> Option<String>,
    host: &str,
    port: u16,
) -> Option<Result<Proxy, SessionError>> {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let (name, url) = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
        .into_iter()
        .find_map(|name| set(name).map(|url| (name, url)))?;
    if let Some(list) = set("no_proxy").or_else(|| set("NO_PROXY")) {
        if no_proxy_matches(&list, host, port) {
            return None;
        }
    }
    Some(Proxy::parse(url.trim()).map_err(|why| {
        SessionError::new(ErrorCode::Proxy, format!("{name} cannot be used: {why}"))
    }))
}

/// Whether `NO_PROXY`'s `list` exempts `host:port`, as curl reads it: entries separated by
/// commas (or spaces); `*` alone exempts every host; a name matches itself and its
/// subdomains (`example.com` and `.example.com` both match `gw.example.com`), without regard
/// to case; an IP address matches itself, and `address/bits` a network; an entry may end in
/// `:port` (IPv6 in brackets, `[::1]:8443`), and then matches only that port.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let address = host.parse::<IpAddr>().ok();
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = match entry.parse::<IpAddr>() {
                // A bare IPv6 address: its colons are not a port.
                Ok(_) => (entry, None),
                Err(_) if entry.contains('/') => (entry, None),
                Err(_) => match split_host_port(entry) {
                    Some((name, port)) => (name, port),
                    None => return false,
                },
            };
            if let Some(wanted) = entry_port {
                if wanted.parse::<u16>().ok() != Some(port) {
                    return false;
                }
            }
            match address {
                Some(address) => address_matches(name, address),
                None => {
                    let name = name.trim_start_matches('.').to_ascii_lowercase();
                    let name = name.strip_suffix('.').unwrap_or(&name);
                    host == name
                        || (host.len() > name.len()
                            && host.ends_with(name)
                            && host.as_bytes()[host.len() - name.len() - 1] == b'.')
                }
            }
        })
}

/// Whether `entry` (an address, or `address/bits`) covers `address`.
fn address_matches(entry: &str, address: IpAddr) -> bool {
    let (net, bits) = match entry.split_once('/') {
        Some((net, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (net, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = net
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    match (net, address) {
        (IpAddr::V4(net), IpAddr::V4(address)) => {
            prefix_matches(u32::from(net).into(), u32::from(address).into(), 32, bits)
        }
        (IpAddr::V6(net), IpAddr::V6(address)) => {
            prefix_matches(u128::from(net), u128::from(address), 128, bits)
        }
        _ => false,
    }
}

/// Whether the first `bits` of two `width`-bit addresses agree (all of them without `bits`).
fn prefix_matches(net: u128, address: u128, width: u32, bits: Option<u32>) -> bool {
    let bits = bits.unwrap_or(width);
    if bits > width {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (address >> shift)
}

/// Longest answer headers an HTTP proxy may send to `CONNECT`.
const MAX_HTTP_ANSWER: usize = 16 * 1024;

/// Opens a tunnel to `host:port` through `proxy` over `stream`, a connection to the proxy.
/// On success the stream carries the gateway's bytes from the next byte on. A refusal is
/// `EPROXY` with the proxy's answer (the HTTP status line, or the SOCKS reply code and its
/// meaning); a proxy that stops answering is the stream's error or `ECONNRESET`.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), SessionError> {
    let io = |err: std::io::Error| {
        let code = crate::errors::io_code(&err);
        SessionError::new(code.clone(), format!("proxy {proxy}: {code} ({err})"))
    };
    match proxy.scheme {
        Scheme::Http => http_connect(stream, proxy, host, port).await,
        Scheme::Socks5 => socks5_connect(stream, proxy, host, port).await,
    }
    .map_err(|failure| match failure {
        Failure::Io(err) => io(err),
        Failure::Refused(why, answer) => {
            SessionError::new(ErrorCode::Proxy, format!("proxy {proxy} refused: {why}"))
                .with_detail(answer)
        }
    })
}

/// How a tunnel failed to open.
enum Failure {
    Io(std::io::Error),
    /// The proxy answered, but not with a tunnel: its answer, in words, and its status or
    /// reply code when it gave one.
    Refused(String, Option<ErrorDetail>),
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::Io(err)
    }
}

async fn http_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Failure> {
    let target = authority(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64(format!("{user}:{pass}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    // The answer's head, read whole. A TLS client speaks first, so nothing of the gateway's
    // can follow the head before we write again: bytes after it are the proxy's (a body of
    // a refusal) and are read as part of the refusal or make the tunnel unusable.
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if answer.len() > MAX_HTTP_ANSWER {
            return Err(Failure::Refused(
                format!("its answer's headers exceed {MAX_HTTP_ANSWER} bytes"),
                None,
            ));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        answer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let status_line = head.lines().next().unwrap_or_default().trim();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) if answer.len() == head_end => Ok(()),
        Some(200..=299) => Err(Failure::Refused(
            format!("{status_line}, then bytes of its own before the tunnel was used"),
            None,
        )),
        Some(status) => Err(Failure::Refused(
            format!("HTTP {}", status_line.get(9..).unwrap_or(status_line)),
            Some(ErrorDetail::ProxyStatus(status)),
        )),
        None => Err(Failure::Refused(
            format!(
                "not an HTTP answer: {:?}",
                status_line.chars().take(80).collect::<String>()
            ),
            None,
        )),
    }
}

/// SOCKS5 reply codes (RFC 1928 section 6) in words.
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Failure> {
    // Greeting: the methods we can do. 0: none; 2: user and password (RFC 1929).
    let greeting: &[u8] = match proxy.credentials {
        Some(_) => &[5, 2, 0, 2],
        None => &[5, 1, 0],
    };
    stream.write_all(greeting).await?;
    let mut chosen = [0u8; 2];
    stream.read_exact(&mut chosen).await?;
    if chosen[0] != 5 {
        return Err(Failure::Refused(
            format!("not a SOCKS5 server (version {})", chosen[0]),
            None,
        ));
    }
    match (chosen[1], &proxy.credentials) {
        (0, _) => {}
        (2, Some((user, pass))) => {
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(user.as_bytes());
            auth.push(pass.len() as u8);
            auth.extend_from_slice(pass.as_bytes());
            stream.write_all(&auth).await?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await?;
            if status[1] != 0 {
                return Err(Failure::Refused(
                    format!("SOCKS5 authentication failed (status {})", status[1]),
                    None,
                ));
            }
        }
        (0xff, _) => {
            return Err(Failure::Refused(
                match proxy.credentials {
                    Some(_) => "SOCKS5: no acceptable authentication method".into(),
                    None => {
                        "SOCKS5: the proxy requires authentication (no acceptable method)".into()
                    }
                },
                None,
            ))
        }
        (method, _) => {
            return Err(Failure::Refused(
                format!("SOCKS5 chose method {method}, which was not offered"),
                None,
            ))
        }
    }
    // CONNECT to the gateway: an address as it is, a name as a name (the proxy resolves it).
    let mut request = vec![5, 1, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            request.push(1);
            request.extend_from_slice(&v4.octets());
        }
        Ok(IpAddr::V6(v6)) => {
            request.push(4);
            request.extend_from_slice(&v6.octets());
        }
        Err(_) => {
            let name = host.as_bytes();
            if name.len() > 255 {
                return Err(Failure::Refused(
                    "SOCKS5 cannot carry a host name over 255 bytes".into(),
                    None,
                ));
            }
            request.push(3);
            request.push(name.len() as u8);
            request.extend_from_slice(name);
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    // Version and reply code first: a server that refuses may close right after them.
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await?;
    if reply[0] != 5 {
        return Err(Failure::Refused(
            format!("not a SOCKS5 reply (version {})", reply[0]),
            None,
        ));
    }
    if reply[1] != 0 {
        return Err(Failure::Refused(
            format!("SOCKS5 reply {} ({})", reply[1], socks_reply(reply[1])),
            Some(ErrorDetail::SocksReply(reply[1])),
        ));
    }
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await?;
    // The bound address, which we do not need, then the port.
    let rest = match reply[1] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        other => {
            return Err(Failure::Refused(
                format!("SOCKS5 reply with unknown address type {other}"),
                None,
            ))
        }
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).await?;
    Ok(())
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
