//! The gateway server driven from Rust over loopback TCP, without Node: the same behaviour the
//! JavaScript suite checks, seen through the core API (`Server`, `ServerEvent`, `Verdict`).

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use imt_gateway::protocol::{ErrorBody, FrameReader, Message, Token, Value};
use imt_gateway::server::{OutboundAction, Server, ServerEvent, ServerOptions, Verdict};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A gateway client's socket: frames read with the client's (and the server's) reader.
struct Peer {
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

async fn start(options: ServerOptions) -> (Server, mpsc::UnboundedReceiver<ServerEvent>, u16) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::new(options, tx);
    let addr = server.listen(Some("127.0.0.1"), 0).await.unwrap();
    (server, rx, addr.port())
}

async fn connect(port: u16) -> Peer {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (read, writer) = tcp.into_split();
    Peer {
        reader: FrameReader::new(read),
        writer,
    }
}

/// The frames of `messages`, one after the other.
fn wire<'a>(messages: impl IntoIterator<Item = &'a Message>) -> BytesMut {
    let mut wire = BytesMut::new();
    for message in messages {
        message.encode(&mut wire);
    }
    wire
}

async fn send(peer: &mut Peer, message: Message) {
    peer.writer.write_all(&wire([&message])).await.unwrap();
}

async fn next(peer: &mut Peer) -> Message {
    let frame = tokio::time::timeout(Duration::from_secs(5), peer.reader.next())
        .await
        .expect("a frame in time")
        .expect("the connection is open")
        .expect("a well-formed frame");
    Message::from_frame(&frame).unwrap()
}

fn event(id: &str, kind: &str) -> Message {
    Message::Event {
        id: Value::String(id.into()),
        kind: kind.into(),
        bundle: Value::Map(vec![("n".into(), Value::Number(1.0))]),
    }
}

async fn handshake(peer: &mut Peer, device: &str) {
    send(peer, Message::hello(device)).await;
    assert_eq!(next(peer).await, Message::Welcome);
    assert_eq!(next(peer).await, Message::Drained);
}

#[tokio::test]
async fn events_are_acknowledged_and_echoed() {
    let (server, mut events, port) = start(ServerOptions::default()).await;
    let mut peer = connect(port).await;
    handshake(&mut peer, "dev").await;
    send(&mut peer, event("e1", "ping")).await;
    assert_eq!(
        next(&mut peer).await,
        Message::Acknowledgement {
            correlid: Value::String("e1".into()),
            status: 0,
            error: None
        }
    );
    match next(&mut peer).await {
        Message::Action {
            id: Value::Number(_),
            kind,
            parameters,
        } => {
            assert_eq!(kind, "ping");
            assert_eq!(
                parameters,
                Value::Map(vec![("n".into(), Value::Number(1.0))])
            );
        }
        other => panic!("expected the echo, got {other:?}"),
    }
    let mut saw_event = false;
    while let Ok(e) = events.try_recv() {
        saw_event |= matches!(e, ServerEvent::Event { ref kind, .. } if kind == "ping");
    }
    assert!(saw_event);
    server.close(false).await;
}

#[tokio::test]
async fn verdicts_decide_the_acknowledgement_in_order() {
    let (server, mut events, port) = start(ServerOptions {
        decide_events: true,
        echo: false,
        ..ServerOptions::default()
    })
    .await;
    let mut peer = connect(port).await;
    handshake(&mut peer, "dev").await;
    send(&mut peer, event("a", "t")).await;
    send(&mut peer, event("b", "t")).await;
    let mut decisions = Vec::new();
    while decisions.len() < 2 {
        if let Some(ServerEvent::Event {
            decision: Some(d), ..
        }) = events.recv().await
        {
            decisions.push(d);
        }
    }
    // Decided out of order, acknowledged in arrival order.
    assert!(server.decide(
        decisions[1],
        Verdict::Reject(ErrorBody {
            code: Some("E1".into()),
            message: "no".into()
        })
    ));
    assert!(server.decide(decisions[0], Verdict::Accept));
    let first = next(&mut peer).await;
    let second = next(&mut peer).await;
    assert!(
        matches!(first, Message::Acknowledgement { ref correlid, status: 0, .. } if *correlid == Value::String("a".into()))
    );
    assert!(
        matches!(second, Message::Acknowledgement { ref correlid, status: 1, .. } if *correlid == Value::String("b".into()))
    );
    server.close(false).await;
}

#[tokio::test]
async fn held_actions_come_before_drained() {
    let (server, _events, port) = start(ServerOptions::default()).await;
    server.queue_action(
        "pi",
        OutboundAction {
            id: Value::Number(1.0),
            kind: "x".into(),
            parameters: Value::Nil,
        },
    );
    let mut peer = connect(port).await;
    send(&mut peer, Message::hello("pi")).await;
    assert_eq!(next(&mut peer).await, Message::Welcome);
    assert_eq!(next(&mut peer).await.token(), Token::Action);
    send(
        &mut peer,
        Message::Acknowledgement {
            correlid: Value::Number(1.0),
            status: 0,
            error: None,
        },
    )
    .await;
    assert_eq!(next(&mut peer).await, Message::Drained);
    server.close(true).await;
}

/// An old connection of the device ends with an action unacknowledged after a newer one went
/// past DRAINED (a device back on a new link before the server noticed the old one was dead):
/// the action goes to the newer connection, not back to the held queue, which that connection
/// will never ask for again. Found by the property test in `src/pair.rs`.
#[tokio::test]
async fn an_action_handed_back_goes_to_the_live_connection() {
    let (server, mut events, port) = start(ServerOptions::default()).await;
    let action = OutboundAction {
        id: Value::String("a1".into()),
        kind: "x".into(),
        parameters: Value::Nil,
    };
    let ticket = server.queue_action("pi", action.clone());
    let mut old = connect(port).await;
    send(&mut old, Message::hello("pi")).await;
    assert_eq!(next(&mut old).await, Message::Welcome);
    assert_eq!(next(&mut old).await.token(), Token::Action);
    let mut new = connect(port).await;
    handshake(&mut new, "pi").await;
    drop(old);
    assert_eq!(
        next(&mut new).await,
        Message::Action {
            id: action.id.clone(),
            kind: action.kind.clone(),
            parameters: action.parameters.clone(),
        }
    );
    send(
        &mut new,
        Message::Acknowledgement {
            correlid: action.id.clone(),
            status: 0,
            error: None,
        },
    )
    .await;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the acknowledgement in time")
            .expect("the server is running");
        if let ServerEvent::Acknowledgement { ticket: t, .. } = event {
            assert_eq!(t, Some(ticket));
            break;
        }
    }
    server.close(true).await;
}

#[tokio::test]
async fn an_oversize_frame_gets_bye_im491_from_its_header_alone() {
    let (server, _events, port) = start(ServerOptions::default()).await;
    // One byte over the cap, the header in one write and byte by byte; no byte of the body.
    let mut header = BytesMut::new();
    header.extend_from_slice(&[4, 0]);
    header.extend_from_slice(&(imt_gateway::protocol::MAX_BUFFER as u32 - 5).to_le_bytes());
    for piece in [header.len(), 1] {
        let mut peer = connect(port).await;
        handshake(&mut peer, "dev").await;
        dribble(&mut peer, &header, piece).await;
        assert_eq!(
            next(&mut peer).await,
            Message::Bye {
                error: Some(ErrorBody {
                    code: Some("IM491".into()),
                    message: "Maximum buffer size exceeded.".into()
                })
            }
        );
        // Then the server's end of the stream.
        let end = tokio::time::timeout(Duration::from_secs(5), peer.reader.next()).await;
        assert!(end.expect("the end in time").is_none());
    }
    server.close(false).await;
}

#[tokio::test]
async fn close_releases_the_port() {
    let (server, _events, port) = start(ServerOptions::default()).await;
    server.close(true).await;
    assert!(server.local_addr().is_none());
    let again = server.listen(Some("127.0.0.1"), port).await.unwrap();
    assert_eq!(again.port(), port);
    server.close(true).await;
}

#[tokio::test]
async fn an_embedder_behind_with_events_holds_the_peers_back_and_loses_none() {
    let options = ServerOptions {
        echo: false,
        event_backlog: Some(64 * 1024),
        ..ServerOptions::default()
    };
    let (server, mut events, port) = start(options).await;
    let Peer {
        reader: mut stream,
        writer: mut sink,
    } = connect(port).await;
    let count = 200;
    let sending = tokio::spawn(async move {
        let mut messages = vec![Message::hello("dev")];
        messages.extend((0..count).map(|n| Message::Event {
            id: Value::String(format!("e{n}").into()),
            kind: "blob".into(),
            bundle: Value::Binary(vec![7u8; 4096].into()),
        }));
        sink.write_all(&wire(&messages)).await.unwrap();
        sink
    });
    let mut acks = 0;
    let mut read_acks = async |acks: &mut usize, wait: Duration| {
        while let Ok(Some(frame)) = tokio::time::timeout(wait, stream.next()).await {
            if let Message::Acknowledgement { .. } = Message::from_frame(&frame.unwrap()).unwrap() {
                *acks += 1;
            }
        }
    };
    // Nothing delivered: the server stops reading once about 64 KiB of events wait.
    read_acks(&mut acks, Duration::from_millis(500)).await;
    assert!(acks < count / 4, "{acks} events were read");
    // Delivered as they come: every event arrives, in order, and is acknowledged.
    let mut seen = 0;
    while seen < count {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the next event in time")
            .unwrap();
        server.delivered(event.weight());
        if let ServerEvent::Event { id, .. } = event {
            assert_eq!(id, Value::String(format!("e{seen}").into()));
            seen += 1;
        }
    }
    read_acks(&mut acks, Duration::from_millis(500)).await;
    assert_eq!(acks, count);
    drop(sending.await.unwrap());
    server.close(false).await;
}

#[tokio::test]
async fn a_peer_stops_being_read_while_256_of_its_events_wait_for_verdicts() {
    let options = ServerOptions {
        echo: false,
        decide_events: true,
        ..ServerOptions::default()
    };
    let (server, mut events, port) = start(options).await;
    let mut peer = connect(port).await;
    handshake(&mut peer, "dev").await;
    let count = 400;
    let sent: Vec<_> = (0..count)
        .map(|n| event(&format!("e{n}"), "ping"))
        .collect();
    peer.writer.write_all(&wire(&sent)).await.unwrap();
    let mut decisions = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        if let ServerEvent::Event { decision, .. } = e {
            decisions.push(decision.unwrap());
        }
    }
    assert_eq!(decisions.len(), 256);
    // Decided, the rest is read, and every event acknowledged in order.
    let mut n = 0;
    while n < count {
        for d in decisions.drain(..) {
            assert!(server.decide(d, Verdict::Accept));
        }
        for _ in 0..256.min(count - n) {
            let ack = next(&mut peer).await;
            assert_eq!(
                ack,
                Message::Acknowledgement {
                    correlid: Value::String(format!("e{n}").into()),
                    status: 0,
                    error: None
                }
            );
            n += 1;
        }
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            if let ServerEvent::Event { decision, .. } = e {
                decisions.push(decision.unwrap());
            }
        }
    }
    assert!(decisions.is_empty());
    server.close(false).await;
}

/// Writes `bytes` in pieces of `piece` bytes, pausing after each, so that the server reads
/// them one at a time (the socket has no Nagle delay: see `connect`).
async fn dribble(peer: &mut Peer, bytes: &[u8], piece: usize) {
    for chunk in bytes.chunks(piece) {
        peer.writer.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The server's events up to the next disconnect (each within 5 s).
async fn events_until_disconnect(
    events: &mut mpsc::UnboundedReceiver<ServerEvent>,
) -> Vec<ServerEvent> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the disconnect in time")
            .unwrap();
        let end = matches!(event, ServerEvent::Disconnect(_));
        seen.push(event);
        if end {
            return seen;
        }
    }
}

#[tokio::test]
async fn frames_in_tiny_writes_are_read_whole_small_and_large() {
    let (server, mut events, port) = start(ServerOptions::default()).await;
    let mut peer = connect(port).await;
    dribble(&mut peer, &wire([&Message::hello("dev")]), 1).await;
    assert_eq!(next(&mut peer).await, Message::Welcome);
    assert_eq!(next(&mut peer).await, Message::Drained);
    // A body past the reader's large-body mark (64 KiB), its header and first bytes a few at
    // a time, the rest in 16 KiB pieces; then a small frame, byte by byte.
    let blob: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    let bundle = Value::Binary(blob.into());
    let large = Message::Event {
        id: Value::String("large".into()),
        kind: "blob".into(),
        bundle: bundle.clone(),
    };
    let bytes = wire([&large]);
    dribble(&mut peer, &bytes[..400], 3).await;
    dribble(&mut peer, &bytes[400..], 16 * 1024).await;
    dribble(&mut peer, &wire([&event("small", "ping")]), 1).await;
    let ack = |id: &str| Message::Acknowledgement {
        correlid: Value::String(id.into()),
        status: 0,
        error: None,
    };
    assert_eq!(next(&mut peer).await, ack("large"));
    match next(&mut peer).await {
        Message::Action { parameters, .. } => assert!(parameters == bundle, "the echo"),
        other => panic!("expected the echo, got {other:?}"),
    }
    assert_eq!(next(&mut peer).await, ack("small"));
    let mut got = Vec::new();
    while got.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv());
        if let ServerEvent::Event { id, bundle, .. } = event.await.unwrap().unwrap() {
            got.push((id, bundle));
        }
    }
    assert_eq!(got[0].0, Value::String("large".into()));
    assert!(got[0].1 == bundle);
    assert_eq!(got[1].0, Value::String("small".into()));
    server.close(false).await;
}

#[tokio::test]
async fn a_stream_cut_inside_a_frame_is_dropped_without_a_word_and_the_server_goes_on() {
    let (server, mut events, port) = start(ServerOptions::default()).await;
    let large = Message::Event {
        id: Value::String("cut".into()),
        kind: "blob".into(),
        bundle: Value::Binary(vec![7u8; 200_000].into()),
    };
    let large = wire([&large]);
    let small = wire([&event("cut", "ping")]);
    // Inside a header, a small body, a large body.
    for bytes in [&small[..3], &small[..small.len() - 1], &large[..100_000]] {
        let mut peer = connect(port).await;
        handshake(&mut peer, "dev").await;
        dribble(&mut peer, bytes, 4096).await;
        peer.writer.shutdown().await.unwrap();
        // No BYE: the end of the stream.
        let end = tokio::time::timeout(Duration::from_secs(5), peer.reader.next()).await;
        assert!(
            end.expect("the end in time").is_none(),
            "{} bytes",
            bytes.len()
        );
        let seen = events_until_disconnect(&mut events).await;
        assert!(
            seen.iter().all(|e| matches!(
                e,
                ServerEvent::Connection(_) | ServerEvent::Hello(_) | ServerEvent::Disconnect(_)
            )),
            "{} bytes: {seen:?}",
            bytes.len()
        );
    }
    // The server goes on.
    let mut peer = connect(port).await;
    handshake(&mut peer, "dev").await;
    send(&mut peer, event("e1", "ping")).await;
    assert!(matches!(
        next(&mut peer).await,
        Message::Acknowledgement { status: 0, .. }
    ));
    server.close(false).await;
}
