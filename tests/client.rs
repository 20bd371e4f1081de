//! The client driver against the bundled server over loopback, without Node: plain TCP and
//! mutual TLS, events echoed back, a kick followed by an automatic reconnect, and a refused
//! connection reported with its code, and the next event written before the previous one's
//! callback runs.

use std::time::Duration;

use imt_gateway::client::{client, ActionAck, Batch, ClientHandle, ClientOptions, Command};
use imt_gateway::pki::{CertRequest, CertificateAuthority, KeyKind};
use imt_gateway::protocol::Value;
use imt_gateway::server::{Server, ServerEvent, ServerOptions};
use imt_gateway::session::{ConnectionState, Notice, OutgoingEvent};
use imt_gateway::tls;
use tokio::sync::mpsc;

struct Started {
    server: Server,
    port: u16,
    _events: mpsc::UnboundedReceiver<ServerEvent>,
}

async fn start(options: ServerOptions) -> Started {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::new(options, tx);
    let addr = server.listen(Some("127.0.0.1"), 0).await.unwrap();
    Started {
        server,
        port: addr.port(),
        _events: rx,
    }
}

fn spawn(options: ClientOptions) -> (ClientHandle, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (handle, task) = client(options, move |batch| {
        let _ = tx.send(batch);
    });
    tokio::spawn(task);
    (handle, rx)
}

/// Collects notices until `done` says the list is complete.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Batch>,
    seen: &mut Vec<Notice>,
    done: impl Fn(&[Notice]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(seen) {
        let batch = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; seen so far: {seen:#?}"))
            .expect("the client is running");
        seen.extend(batch.notices);
    }
}

fn event(seq: u64) -> OutgoingEvent {
    OutgoingEvent::new(
        seq,
        Value::String(format!("event-{seq}").into()),
        "reading",
        Value::Map(vec![("n".into(), Value::Number(seq as f64))]),
    )
}

/// A state notice as the driver reports it, without a delay.
fn state(state: ConnectionState) -> Notice {
    Notice::State {
        state,
        delay: None,
        failed: false,
    }
}

/// `seen` with each backoff's delay checked (at most `max`) and left out, so lists compare.
fn without_delays(seen: &[Notice], max: Duration) -> Vec<Notice> {
    seen.iter()
        .map(|n| match n {
            Notice::State {
                state,
                delay,
                failed,
            } => {
                assert_eq!(delay.is_some(), *state == ConnectionState::Backoff, "{n:?}");
                assert!(delay.is_none_or(|d| d <= max), "{n:?}");
                Notice::State {
                    state: *state,
                    delay: None,
                    failed: *failed,
                }
            }
            other => other.clone(),
        })
        .collect()
}

/// `seen` without the state notices.
fn without_states(seen: &[Notice]) -> Vec<Notice> {
    seen.iter()
        .filter(|n| !matches!(n, Notice::State { .. }))
        .cloned()
        .collect()
}

fn count(seen: &[Notice], pred: impl Fn(&Notice) -> bool) -> usize {
    seen.iter().filter(|n| pred(n)).count()
}

async fn echo_three_events(options: ClientOptions) {
    let (client, mut rx) = spawn(options);
    client.command(Command::Connect { cycle: 1 });
    for seq in 1..=3 {
        client.command(Command::Send(Box::new(event(seq))));
    }
    let mut seen = Vec::new();
    // The server echoes each event as an action, and sends the next echo only after the
    // previous one was acknowledged.
    for echoes in 1..=3 {
        until(&mut rx, &mut seen, |s| {
            count(s, |n| matches!(n, Notice::Action { .. })) == echoes
        })
        .await;
        let id = seen.iter().rev().find_map(|n| match n {
            Notice::Action { key, .. } => Some(key.clone()),
            _ => None,
        });
        client.command(Command::Ack(Box::new(ActionAck {
            id: id.unwrap(),
            error: None,
        })));
    }
    let notices = without_states(&seen);
    assert_eq!(notices[0], Notice::Connect);
    assert_eq!(notices[1], Notice::Drain);
    let done: Vec<u64> = seen
        .iter()
        .filter_map(|n| match n {
            Notice::EventDone { seq, result } => {
                assert_eq!(result, &Ok(()));
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![1, 2, 3]);
    client.command(Command::Close { keep_queue: false });
    until(&mut rx, &mut seen, |s| {
        s.last() == Some(&Notice::Disconnect)
    })
    .await;
    // The counters include what the batches reported.
    let stats = client.stats();
    let session = stats.session;
    assert_eq!((session.acknowledged, session.rejected), (3, 0));
    assert_eq!((session.actions_received, session.actions_acked), (3, 3));
    assert_eq!(
        (session.queued, session.in_flight, session.events_written),
        (0, 0, 3)
    );
    assert!(!session.connected && !session.drained);
    let events: u64 = (1..=3).map(|seq| event(seq).frame.len() as u64).sum();
    assert!(stats.bytes_sent > events, "{stats:?}");
    // WELCOME, DRAINED (6 bytes each), three acknowledgements and three actions at least.
    assert!(stats.bytes_received > 12 + 3 * 6 + 3 * 6, "{stats:?}");
    assert!(
        stats.rtt.is_some_and(|rtt| rtt > Duration::ZERO),
        "{stats:?}"
    );
}

#[tokio::test]
async fn plain_tcp_events_are_acknowledged_and_echoed() {
    let started = start(ServerOptions::default()).await;
    echo_three_events(ClientOptions::new("127.0.0.1", started.port, "dev")).await;
    started.server.close(false).await;
}

#[tokio::test]
async fn mutual_tls_events_are_acknowledged_and_echoed() {
    let ca = CertificateAuthority::new("test root").unwrap();
    let server_cert = ca
        .issue(&CertRequest {
            common_name: "localhost".into(),
            alt_names: vec!["localhost".into(), "127.0.0.1".into()],
            server: true,
            ..CertRequest::default()
        })
        .unwrap();
    let device = ca
        .issue(&CertRequest {
            common_name: "dev".into(),
            client: true,
            key: KeyKind::Rsa2048,
            ..CertRequest::default()
        })
        .unwrap();
    let roots = vec![ca.cert_pem().into_bytes()];
    let server_tls = tls::server_config(
        server_cert.key_pem.as_bytes(),
        server_cert.cert_pem.as_bytes(),
        Some(&roots),
    )
    .unwrap();
    let started = start(ServerOptions {
        tls: Some(server_tls),
        ..ServerOptions::default()
    })
    .await;
    let mut options = ClientOptions::new("127.0.0.1", started.port, "dev");
    options.tls = Some(
        tls::client_config(
            device.key_pem.as_bytes(),
            device.cert_pem.as_bytes(),
            Some(&roots),
        )
        .unwrap(),
    );
    echo_three_events(options).await;
    started.server.close(false).await;
}

#[tokio::test]
async fn a_kick_is_followed_by_one_reconnect_and_a_second_drain() {
    let started = start(ServerOptions::default()).await;
    let mut options = ClientOptions::new("127.0.0.1", started.port, "dev");
    options.reconnect_delay = Duration::from_millis(50);
    let (client, mut rx) = spawn(options);
    client.command(Command::Connect { cycle: 1 });
    let mut seen = Vec::new();
    until(&mut rx, &mut seen, |s| s.contains(&Notice::Drain)).await;
    started.server.kick();
    until(&mut rx, &mut seen, |s| {
        count(s, |n| *n == Notice::Drain) == 2
    })
    .await;
    use ConnectionState::*;
    // Each state before the notices of the input that made it.
    assert_eq!(
        without_delays(&seen, Duration::from_millis(50)),
        vec![
            state(Connecting),
            state(Connected),
            Notice::Connect,
            state(Drained),
            Notice::Drain,
            state(Backoff),
            state(Connecting),
            Notice::Reconnect,
            state(Connected),
            state(Drained),
            Notice::Drain
        ]
    );
    started.server.close(false).await;
}

#[tokio::test]
async fn a_refused_connection_is_an_error_without_reconnecting() {
    // Bind and drop, so the port is very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = ClientOptions::new("127.0.0.1", port, "dev");
    options.session.auto_reconnect = false;
    let (client, mut rx) = spawn(options);
    client.command(Command::Connect { cycle: 7 });
    let mut notices = Vec::new();
    let mut idle = None;
    while idle.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        notices.extend(batch.notices);
        idle = batch.idle;
    }
    match &notices[..] {
        [connecting, Notice::State {
            state: ConnectionState::Closed,
            delay: None,
            failed: true,
        }, Notice::Error(err)] => {
            assert_eq!(*connecting, state(ConnectionState::Connecting));
            assert_eq!(err.code, "ECONNREFUSED");
            assert!(err.message.contains("ECONNREFUSED 127.0.0.1"), "{err}");
        }
        other => panic!("expected connecting, a failed attempt and one error, got {other:?}"),
    }
    assert_eq!(idle, Some(7));
}

#[tokio::test]
async fn a_server_that_goes_away_leaves_the_client_idle_without_reconnecting() {
    let started = start(ServerOptions::default()).await;
    let mut options = ClientOptions::new("127.0.0.1", started.port, "dev");
    options.session.auto_reconnect = false;
    let (client, mut rx) = spawn(options);
    client.command(Command::Connect { cycle: 3 });
    let mut seen = Vec::new();
    until(&mut rx, &mut seen, |s| s.contains(&Notice::Drain)).await;
    // Without BYE: the connection just ends.
    started.server.close(false).await;
    let mut idle = None;
    while idle.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the client reports in time")
            .expect("the client is running");
        seen.extend(batch.notices);
        idle = batch.idle;
    }
    assert_eq!(idle, Some(3));
    use ConnectionState::*;
    assert_eq!(
        seen,
        vec![
            state(Connecting),
            state(Connected),
            Notice::Connect,
            state(Drained),
            Notice::Drain,
            state(Closed),
            Notice::Disconnect
        ]
    );
}

#[tokio::test]
async fn the_next_event_is_on_the_wire_before_the_previous_callback_runs() {
    // The server runs on a thread and runtime of its own, so it keeps working while the
    // client's sink (the stand-in for a JavaScript callback) blocks.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Value>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let server = Server::new(ServerOptions::default(), tx);
            let addr = server.listen(Some("127.0.0.1"), 0).await.unwrap();
            port_tx.send(addr.port()).unwrap();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    if let ServerEvent::Event { id, .. } = event {
                        let _ = seen_tx.send(id);
                    }
                }
            });
            let _ = stop_rx.await;
            server.close(false).await;
        });
    });
    let port = port_rx.recv().unwrap();
    let seen_rx = std::sync::Mutex::new(seen_rx);

    // On the first event's callback: has the second event reached the server meanwhile?
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel();
    let (notices_tx, mut notices_rx) = mpsc::unbounded_channel();
    let (client, task) = client(
        ClientOptions::new("127.0.0.1", port, "dev"),
        move |batch: Batch| {
            for notice in &batch.notices {
                if let Notice::EventDone { seq: 1, .. } = notice {
                    let mut arrived = Vec::new();
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while let Some(left) =
                        deadline.checked_duration_since(std::time::Instant::now())
                    {
                        match seen_rx.lock().unwrap().recv_timeout(left) {
                            Ok(id) => {
                                let second = id == Value::String("event-2".into());
                                arrived.push(id);
                                if second {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    let _ = answer_tx.send(arrived);
                }
            }
            let _ = notices_tx.send(batch);
        },
    );
    tokio::spawn(task);
    client.command(Command::Connect { cycle: 1 });
    client.command(Command::Send(Box::new(event(1))));
    client.command(Command::Send(Box::new(event(2))));
    let arrived = tokio::time::timeout(Duration::from_secs(10), answer_rx.recv())
        .await
        .expect("the first event's callback ran")
        .unwrap();
    assert_eq!(
        arrived,
        vec![
            Value::String("event-1".into()),
            Value::String("event-2".into())
        ],
        "the server had the second event while the first one's callback was running"
    );
    let mut seen = Vec::new();
    until(&mut notices_rx, &mut seen, |s| {
        count(s, |n| matches!(n, Notice::EventDone { .. })) == 2
    })
    .await;
    client.command(Command::Close { keep_queue: false });
    stop_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
}

/// A gateway written by hand, frame by frame: WELCOME and DRAINED, then what the test sends.
async fn scripted_gateway() -> (u16, tokio::task::JoinHandle<tokio::net::TcpStream>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 6];
        socket.read_exact(&mut header).await.unwrap();
        assert_eq!(header[0], 0x01, "HELLO first");
        let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let mut body = vec![0; len];
        socket.read_exact(&mut body).await.unwrap();
        socket
    });
    (port, accepted)
}

fn raw_frame(token: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![token, 0];
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

#[tokio::test]
async fn an_unknown_token_and_a_second_welcome_are_skipped_without_an_error() {
    use tokio::io::AsyncWriteExt;
    let (port, accepted) = scripted_gateway().await;
    let mut options = ClientOptions::new("127.0.0.1", port, "dev");
    options.session.auto_reconnect = false;
    let (client, mut rx) = spawn(options);
    client.command(Command::Connect { cycle: 1 });
    let mut socket = accepted.await.unwrap();
    let mut bytes = raw_frame(0x02, b"");
    bytes.extend(raw_frame(0x07, b""));
    bytes.extend(raw_frame(0x09, b"\xc0"));
    bytes.extend(raw_frame(0x02, b""));
    // ACTION {id: 5, type: "t", parameters: nil}
    bytes.extend(raw_frame(
        0x05,
        b"\x83\xa2id\x05\xa4type\xa1t\xaaparameters\xc0",
    ));
    socket.write_all(&bytes).await.unwrap();
    let mut seen = Vec::new();
    until(&mut rx, &mut seen, |s| {
        s.iter().any(|n| matches!(n, Notice::Action { .. }))
    })
    .await;
    let recovered: Vec<_> = seen
        .iter()
        .filter_map(|n| match n {
            Notice::Recovered(err) => Some(err.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        recovered,
        ["Unknown message token 0x09.", "Received welcome twice."]
    );
    assert_eq!(count(&seen, |n| matches!(n, Notice::Error(_))), 0);
    assert_eq!(count(&seen, |n| matches!(n, Notice::Disconnect)), 0);
}
