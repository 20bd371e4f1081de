//! The gateway server driven from Rust over loopback TCP, without Node: the same behaviour the
//! JavaScript suite checks, seen through the core API (`Server`, `ServerEvent`, `Verdict`).

use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use imt_gateway::protocol::{ErrorBody, FrameCodec, Message, Token, Value};
use imt_gateway::server::{OutboundAction, Server, ServerEvent, ServerOptions, Verdict};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

type Peer = Framed<TcpStream, FrameCodec>;

async fn start(options: ServerOptions) -> (Server, mpsc::UnboundedReceiver<ServerEvent>, u16) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::new(options, tx);
    let addr = server.listen(Some("127.0.0.1"), 0).await.unwrap();
    (server, rx, addr.port())
}

async fn connect(port: u16) -> Peer {
    Framed::new(
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        FrameCodec,
    )
}

async fn send(peer: &mut Peer, message: Message) {
    peer.send(message.to_frame()).await.unwrap();
}

async fn next(peer: &mut Peer) -> Message {
    let frame = tokio::time::timeout(Duration::from_secs(5), peer.next())
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
async fn an_oversize_frame_gets_bye_im491() {
    let (server, _events, port) = start(ServerOptions::default()).await;
    let mut peer = connect(port).await;
    handshake(&mut peer, "dev").await;
    let mut header = BytesMut::new();
    header.extend_from_slice(&[4, 0]);
    header.extend_from_slice(&(imt_gateway::protocol::MAX_BUFFER as u32 - 5).to_le_bytes());
    peer.get_mut().write_all(&header).await.unwrap();
    assert_eq!(
        next(&mut peer).await,
        Message::Bye {
            error: Some(ErrorBody {
                code: Some("IM491".into()),
                message: "Maximum buffer size exceeded.".into()
            })
        }
    );
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
    let peer = connect(port).await;
    let (mut sink, mut stream) = peer.split();
    sink.send(Message::hello("dev").to_frame()).await.unwrap();
    let count = 200;
    let sending = tokio::spawn(async move {
        for n in 0..count {
            let message = Message::Event {
                id: Value::String(format!("e{n}").into()),
                kind: "blob".into(),
                bundle: Value::Binary(vec![7u8; 4096].into()),
            };
            sink.feed(message.to_frame()).await.unwrap();
        }
        sink.flush().await.unwrap();
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
    for n in 0..count {
        peer.feed(event(&format!("e{n}"), "ping").to_frame())
            .await
            .unwrap();
    }
    SinkExt::<Message>::flush(&mut peer).await.unwrap();
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
