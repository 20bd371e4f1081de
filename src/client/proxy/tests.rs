use super::*;
use std::collections::HashMap;
use tokio::io::duplex;

/// A proxy URL and what it reads as: scheme, host, port, user and password.
type Case = (
    &'static str,
    Scheme,
    &'static str,
    u16,
    Option<(&'static str, &'static str)>,
);

#[test]
fn proxy_urls_are_read_with_their_defaults_and_credentials() {
    let cases: &[Case] = &[
        ("http://proxy:3128", Scheme::Http, "proxy", 3128, None),
        ("http://proxy", Scheme::Http, "proxy", 80, None),
        ("HTTP://proxy:8080/", Scheme::Http, "proxy", 8080, None),
        ("socks5://s", Scheme::Socks5, "s", 1080, None),
        ("socks5h://s:9050", Scheme::Socks5, "s", 9050, None),
        ("http://[::1]:3128", Scheme::Http, "::1", 3128, None),
        ("http://[fe80::1]", Scheme::Http, "fe80::1", 80, None),
        (
            "http://u%40x:p%3Aw%25@10.0.0.1:8",
            Scheme::Http,
            "10.0.0.1",
            8,
            Some(("u@x", "p:w%")),
        ),
        (
            "socks5://user@s:1",
            Scheme::Socks5,
            "s",
            1,
            Some(("user", "")),
        ),
    ];
    for (url, scheme, host, port, credentials) in cases {
        let proxy = Proxy::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(proxy.scheme, *scheme, "{url}");
        assert_eq!(proxy.host, *host, "{url}");
        assert_eq!(proxy.port, *port, "{url}");
        assert_eq!(
            proxy.credentials,
            credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            "{url}"
        );
    }
}

#[test]
fn bad_proxy_urls_are_refused_without_repeating_the_password() {
    for url in [
        "proxy:3128",
        "https://proxy:3128",
        "socks4://proxy",
        "http://proxy:0",
        "http://proxy:99999",
        "http://proxy:port",
        "http://:3128",
        "http://proxy:3128/path",
        "http://user:secret@proxy:3128/x",
        "http://user:bad%zz@proxy",
    ] {
        let err = Proxy::parse(url).expect_err(url);
        assert!(!err.contains("secret"), "{url}: {err}");
    }
    let long = format!("http://{}:p@proxy", "u".repeat(256));
    assert!(Proxy::parse(&long).is_err());
}

#[test]
fn a_proxy_shows_without_its_password() {
    let proxy = Proxy::parse("socks5://me:hunter2@s:1080").unwrap();
    assert_eq!(format!("{proxy:?}"), "socks5://me:***@s:1080");
    assert_eq!(proxy.to_string(), "socks5://me:***@s:1080");
    assert_eq!(
        Proxy::parse("http://[::1]:1").unwrap().url(),
        "http://[::1]:1"
    );
}

#[test]
fn no_proxy_is_matched_as_curl_matches_it() {
    let cases: &[(&str, &str, u16, bool)] = &[
        ("*", "anything.example", 443, true),
        ("example.com", "example.com", 443, true),
        ("example.com", "gw.example.com", 443, true),
        (".example.com", "gw.example.com", 443, true),
        (".example.com", "example.com", 443, true),
        ("example.com", "badexample.com", 443, false),
        ("example.com", "example.com.evil", 443, false),
        ("EXAMPLE.com", "Gw.Example.COM", 443, true),
        ("example.com.", "gw.example.com", 443, true),
        ("other.org, example.com", "gw.example.com", 443, true),
        ("other.org example.com", "gw.example.com", 443, true),
        ("other.org", "gw.example.com", 443, false),
        ("example.com:443", "gw.example.com", 443, true),
        ("example.com:8443", "gw.example.com", 443, false),
        ("10.0.0.1", "10.0.0.1", 443, true),
        ("10.0.0.1", "10.0.0.2", 443, false),
        ("10.0.0.0/8", "10.1.2.3", 443, true),
        ("10.0.0.0/8", "11.1.2.3", 443, false),
        ("10.0.0.1:443", "10.0.0.1", 443, true),
        ("10.0.0.1:80", "10.0.0.1", 443, false),
        ("::1", "::1", 443, true),
        ("::1", "[::1]", 443, true),
        ("[::1]:443", "::1", 443, true),
        ("[::1]:80", "::1", 443, false),
        ("fd00::/8", "fd12::5", 443, true),
        ("fd00::/8", "fe80::1", 443, false),
        ("0.0.0.0/0", "192.168.1.1", 443, true),
        ("10.0.0.0/8", "gw.example.com", 443, false),
        ("10.0.0.0/40", "10.0.0.1", 443, false),
        ("", "example.com", 443, false),
        (" , ", "example.com", 443, false),
    ];
    for (list, host, port, expected) in cases {
        assert_eq!(
            no_proxy_matches(list, host, *port),
            *expected,
            "NO_PROXY={list:?} host {host}:{port}"
        );
    }
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn the_environment_is_read_in_curls_order() {
    let proxy = |vars: &[(&str, &str)]| {
        from_environment(env(vars), "gw.example.com", 443).map(|p| p.map(|p| p.url()))
    };
    assert_eq!(proxy(&[]), None);
    assert_eq!(
        proxy(&[("HTTPS_PROXY", "http://a:1"), ("https_proxy", "http://b:1")]),
        Some(Ok("http://b:1".into()))
    );
    assert_eq!(
        proxy(&[("HTTPS_PROXY", "http://a:1"), ("ALL_PROXY", "socks5://c:1")]),
        Some(Ok("http://a:1".into()))
    );
    assert_eq!(
        proxy(&[("https_proxy", " "), ("all_proxy", "socks5://c:1")]),
        Some(Ok("socks5://c:1".into())),
        "an empty variable counts as unset"
    );
    assert_eq!(
        proxy(&[("http_proxy", "http://a:1"), ("HTTP_PROXY", "http://a:1")]),
        None,
        "http_proxy is for http:// URLs, not a TLS connection"
    );
    assert_eq!(
        proxy(&[("https_proxy", "http://a:1"), ("no_proxy", "example.com")]),
        None
    );
    assert_eq!(
        proxy(&[("https_proxy", "http://a:1"), ("NO_PROXY", "*")]),
        None
    );
    let Some(Err(err)) = proxy(&[("https_proxy", "ftp://user:pw@a:1")]) else {
        panic!("a bad variable must fail the connection, not be ignored");
    };
    assert_eq!(err.code, ErrorCode::Proxy);
    assert!(err.message.contains("https_proxy"), "{}", err.message);
    assert!(!err.message.contains("pw"), "{}", err.message);
}

#[test]
fn base64_is_rfc_4648s() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

/// Runs `tunnel` against a scripted proxy: `script` reads what the client sent and answers;
/// once the tunnel is open the client writes `hello` through it.
async fn against<F, Fut>(proxy: &str, host: &str, script: F) -> Result<(), SessionError>
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let proxy = Proxy::parse(proxy).unwrap();
    let (mut client, server) = duplex(64 * 1024);
    let peer = tokio::spawn(script(server));
    let result = tunnel(&mut client, &proxy, host, 443).await;
    if result.is_ok() {
        // The gateway's first bytes, which a script may read through the tunnel.
        let _ = client.write_all(b"hello").await;
    }
    drop(client);
    peer.await.unwrap();
    result
}

/// Reads an HTTP request head.
async fn head(stream: &mut tokio::io::DuplexStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn http_connect_sends_the_target_and_basic_credentials() {
    let result = against(
        "http://Aladdin:open%20sesame@p:3128",
        "gw.example.com",
        |mut s| async move {
            let request = head(&mut s).await;
            assert_eq!(
                request,
                "CONNECT gw.example.com:443 HTTP/1.1\r\nHost: gw.example.com:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
            );
            s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            // The tunnel is the stream from here on.
            let mut hello = [0u8; 5];
            s.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello");
        },
    )
    .await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn http_connect_to_an_ipv6_gateway_brackets_it() {
    let result = against("http://p:3128", "2001:db8::1", |mut s| async move {
        let request = head(&mut s).await;
        assert!(
            request.starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"),
            "{request}"
        );
        s.write_all(b"HTTP/1.0 200 OK\r\nVia: x\r\n\r\n")
            .await
            .unwrap();
    })
    .await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn an_http_refusal_is_eproxy_with_the_status() {
    let result = against("http://p:3128", "gw", |mut s| async move {
        head(&mut s).await;
        s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Proxy);
    assert!(
        err.message.contains("407 Proxy Authentication Required"),
        "{}",
        err.message
    );
    assert_eq!(err.detail, Some(ErrorDetail::ProxyStatus(407)));
}

#[tokio::test]
async fn a_proxy_that_hangs_up_or_babbles_is_an_error() {
    let hung = against("http://p:3128", "gw", |mut s| async move {
        head(&mut s).await;
    })
    .await
    .unwrap_err();
    assert_eq!(hung.code.code(), "ECONNRESET", "{hung}");

    let babble = against("http://p:3128", "gw", |mut s| async move {
        head(&mut s).await;
        s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await.unwrap();
    })
    .await
    .unwrap_err();
    assert_eq!(babble.code, ErrorCode::Proxy);
    assert_eq!(babble.detail, None);
    assert!(babble.message.contains("not an HTTP answer"), "{babble}");

    let endless = against("http://p:3128", "gw", |mut s| async move {
        head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("X: {}\r\n", "y".repeat(1000));
        for _ in 0..40 {
            if s.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    })
    .await
    .unwrap_err();
    assert_eq!(endless.code, ErrorCode::Proxy);
    assert!(endless.message.contains("exceed"), "{endless}");
}

#[tokio::test]
async fn socks5_without_credentials_sends_the_name_for_the_proxy_to_resolve() {
    let result = against("socks5://s:1080", "gw.example.com", |mut s| async move {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(greeting, [5, 1, 0]);
        s.write_all(&[5, 0]).await.unwrap();
        let mut request = vec![0u8; 4 + 1 + 14 + 2];
        s.read_exact(&mut request).await.unwrap();
        let mut expected = vec![5, 1, 0, 3, 14];
        expected.extend_from_slice(b"gw.example.com");
        expected.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(request, expected);
        // Bound to a name, to check the reply is read whole.
        s.write_all(&[5, 0, 0, 3, 2, b'h', b'i', 0, 80, b'!'])
            .await
            .unwrap();
    })
    .await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn socks5_with_credentials_authenticates_and_sends_an_address_as_an_address() {
    let result = against("socks5://me:pw@s:1080", "10.1.2.3", |mut s| async move {
        let mut greeting = [0u8; 4];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(greeting, [5, 2, 0, 2]);
        s.write_all(&[5, 2]).await.unwrap();
        let mut auth = [0u8; 1 + 1 + 2 + 1 + 2];
        s.read_exact(&mut auth).await.unwrap();
        assert_eq!(auth, [1, 2, b'm', b'e', 2, b'p', b'w']);
        s.write_all(&[1, 0]).await.unwrap();
        let mut request = [0u8; 4 + 4 + 2];
        s.read_exact(&mut request).await.unwrap();
        assert_eq!(request, [5, 1, 0, 1, 10, 1, 2, 3, 1, 187]);
        s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    })
    .await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn socks5_refusals_carry_the_reply_code() {
    let refused = against("socks5://s:1080", "gw", |mut s| async move {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(&[5, 0]).await.unwrap();
        let mut request = [0u8; 4 + 1 + 2 + 2];
        s.read_exact(&mut request).await.unwrap();
        s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Proxy);
    assert!(
        refused
            .message
            .contains("SOCKS5 reply 5 (connection refused)"),
        "{refused}"
    );
    assert_eq!(refused.detail, Some(ErrorDetail::SocksReply(5)));

    let needs_auth = against("socks5://s:1080", "gw", |mut s| async move {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(&[5, 0xff]).await.unwrap();
    })
    .await
    .unwrap_err();
    assert!(
        needs_auth.message.contains("requires authentication"),
        "{needs_auth}"
    );

    let bad_password = against("socks5://me:no@s:1080", "gw", |mut s| async move {
        let mut greeting = [0u8; 4];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(&[5, 2]).await.unwrap();
        let mut auth = [0u8; 7];
        s.read_exact(&mut auth).await.unwrap();
        s.write_all(&[1, 1]).await.unwrap();
    })
    .await
    .unwrap_err();
    assert!(
        bad_password.message.contains("authentication failed"),
        "{bad_password}"
    );
    assert!(!bad_password.message.contains("no@"), "{bad_password}");
}

#[tokio::test]
async fn a_socks5_refusal_cut_short_after_its_reply_code_still_carries_it() {
    // As some servers deny: version and reply code, then the connection closed.
    let denied = against("socks5://s:1080", "gw", |mut s| async move {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(&[5, 0]).await.unwrap();
        let mut request = [0u8; 4 + 1 + 2 + 2];
        s.read_exact(&mut request).await.unwrap();
        s.write_all(&[5, 2]).await.unwrap();
    })
    .await
    .unwrap_err();
    assert_eq!(denied.code, ErrorCode::Proxy, "{denied}");
    assert_eq!(denied.detail, Some(ErrorDetail::SocksReply(2)));
    assert!(
        denied.message.contains("connection not allowed by ruleset"),
        "{denied}"
    );
}
