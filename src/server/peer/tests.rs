//! The peer's tests: each drives a [`Peer`] by hand and passes it the time.

use super::*;
use bytes::Bytes;

const EPOCH_MS: f64 = 1_800_000_000_000.0;

fn action(id: &str, ticket: Option<u64>) -> Queued {
    Queued {
        action: OutboundAction {
            id: Value::String(id.into()),
            kind: "lamp".into(),
            parameters: Value::Nil,
        },
        ticket,
    }
}

fn written(q: &Queued) -> Output {
    Output::Write(Message::Action {
        id: q.action.id.clone(),
        kind: q.action.kind.clone(),
        parameters: q.action.parameters.clone(),
    })
}

fn id(s: &str) -> Value {
    Value::String(s.into())
}

fn event(s: &str) -> Message {
    Message::Event {
        id: id(s),
        kind: "ping".into(),
        bundle: Value::Map(vec![("n".into(), Value::String(s.into()))]),
    }
}

fn ack_of(correlid: Value) -> Message {
    Message::Acknowledgement {
        correlid,
        status: 0,
        error: None,
    }
}

fn acked(s: &str) -> Output {
    Output::Write(ack_of(id(s)))
}

fn bye(code: ErrorCode, message: &str) -> Message {
    Message::Bye {
        error: Some(ErrorBody {
            code: Some(code.code().into()),
            message: message.into(),
        }),
    }
}

fn writes(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Write(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// A plain TCP peer, connected at `now`.
fn connected(config: PeerConfig, now: Instant) -> Peer {
    let mut peer = Peer::new(config, now, EPOCH_MS);
    assert_eq!(peer.accepted(now), [Output::Emit(Notice::Connection)]);
    assert_eq!(peer.phase(), Phase::AwaitHello);
    peer
}

/// A peer past DRAINED, with no held actions.
fn live(config: PeerConfig, now: Instant) -> Peer {
    let mut peer = connected(config, now);
    let out = peer.receive(Message::hello("pi"), now);
    assert_eq!(out.last(), Some(&Output::NeedHeld));
    assert_eq!(peer.held(None), [Output::Write(Message::Drained)]);
    assert_eq!(peer.phase(), Phase::Live);
    peer
}

/// A peer past DRAINED whose events wait for the embedder's verdicts.
fn deciding(echo: bool, now: Instant) -> Peer {
    let config = PeerConfig {
        decide_events: true,
        echo,
        ..PeerConfig::default()
    };
    live(config, now)
}

/// The outputs of a violation (the goodbye's deadline, `now + LINGER`, is the peer's
/// `poll_timeout`, checked where the peer is at hand).
fn assert_violation(out: &[Output], code: ErrorCode, message: &str, _now: Instant) {
    assert_eq!(
        out,
        [
            Output::Emit(Notice::ClientError {
                code: code.clone(),
                message: message.into(),
            }),
            Output::Write(bye(code, message)),
            Output::Shutdown { linger: true },
        ]
    );
}

#[test]
fn held_actions_go_one_at_a_time_before_drained() {
    let now = Instant::now();
    let mut peer = connected(PeerConfig::default(), now);
    let out = peer.receive(Message::hello("pi-1"), now);
    assert_eq!(
        out,
        [
            Output::Emit(Notice::Hello {
                device_name: Some("pi-1".into())
            }),
            Output::Write(Message::Welcome),
            Output::NeedHeld,
        ]
    );
    assert_eq!(peer.device_name(), Some("pi-1"));
    let (a1, a2) = (action("a1", Some(1)), action("a2", Some(2)));
    assert_eq!(peer.held(Some(a1.clone())), [written(&a1)]);
    // Nothing more until a1 is acknowledged: an answer nobody asked for is no DRAINED.
    assert_eq!(peer.held(None), []);
    assert_eq!(peer.phase(), Phase::Holding);
    assert_eq!(peer.in_flight(), Some(&a1));
    let out = peer.receive(ack_of(id("a1")), now);
    assert_eq!(
        out,
        [
            Output::Emit(Notice::Acknowledgement {
                ticket: Some(1),
                correlid: id("a1"),
                status: 0,
                error: None,
            }),
            Output::NeedHeld,
        ]
    );
    assert_eq!(peer.held(Some(a2.clone())), [written(&a2)]);
    let broken = ErrorBody {
        code: None,
        message: "Lamp broken.".into(),
    };
    let out = peer.receive(
        Message::Acknowledgement {
            correlid: id("a2"),
            status: 1,
            error: Some(broken.clone()),
        },
        now,
    );
    assert_eq!(
        out,
        [
            Output::Emit(Notice::Acknowledgement {
                ticket: Some(2),
                correlid: id("a2"),
                status: 1,
                error: Some(broken),
            }),
            Output::NeedHeld,
        ]
    );
    assert_eq!(peer.held(None), [Output::Write(Message::Drained)]);
    assert_eq!(peer.phase(), Phase::Live);
    assert_eq!(peer.unacked().count(), 0);
}

#[test]
fn unacknowledged_actions_are_handed_back_in_order_when_the_connection_ends() {
    let now = Instant::now();
    let mut peer = live(
        PeerConfig {
            echo: true,
            ..PeerConfig::default()
        },
        now,
    );
    let (a1, a2, a3) = (
        action("a1", Some(1)),
        action("a2", Some(2)),
        action("a3", Some(3)),
    );
    assert_eq!(peer.queue(a1.clone()), [written(&a1)]);
    assert_eq!(peer.queue(a2.clone()), []);
    // An echo waits in between; echoes are never handed back.
    assert_eq!(peer.receive(event("e1"), now).len(), 2);
    assert_eq!(peer.queue(a3.clone()), []);
    assert_eq!(peer.unacked().count(), 4);
    assert_eq!(
        peer.closed(),
        [
            Output::HandBack(vec![a1, a2, a3]),
            Output::Emit(Notice::Disconnect),
        ]
    );
    assert_eq!(peer.phase(), Phase::Closed);
    // An action that reaches a closed connection goes straight back.
    let late = action("late", Some(4));
    assert_eq!(peer.queue(late.clone()), [Output::HandBack(vec![late])]);
    assert_eq!(peer.closed(), []);
}

#[test]
fn a_held_action_in_flight_is_handed_back_after_a_violation_and_goodbye() {
    let now = Instant::now();
    let mut peer = connected(PeerConfig::default(), now);
    peer.receive(Message::hello("pi-3"), now);
    let keep = action("keep", Some(7));
    assert_eq!(peer.held(Some(keep.clone())), [written(&keep)]);
    let out = peer.receive(ack_of(id("other")), now);
    assert_violation(
        &out,
        ErrorCode::Proto,
        "Received acknowledgement for different action.",
        now,
    );
    assert_eq!(peer.in_flight(), Some(&keep));
    // The goodbye ends; the timer is stopped and the action goes back.
    assert_eq!(
        peer.closed(),
        [
            Output::HandBack(vec![keep]),
            Output::Emit(Notice::Disconnect),
        ]
    );
    assert_eq!(peer.poll_timeout(), None);
}

#[test]
fn acknowledgements_keep_arrival_order_when_verdicts_come_out_of_order() {
    let now = Instant::now();
    let mut peer = deciding(true, now);
    for (n, name) in ["e1", "e2", "e3"].into_iter().enumerate() {
        let Message::Event { id, kind, bundle } = event(name) else {
            unreachable!()
        };
        let expected = Output::Emit(Notice::Event {
            number: n as u64 + 1,
            id,
            kind,
            bundle,
            decide: true,
        });
        assert_eq!(peer.receive(event(name), now), [expected]);
    }
    let rejection = ErrorBody {
        code: Some("E42".into()),
        message: "No pings today.".into(),
    };
    // The third and second are decided first: they wait for the first.
    assert_eq!(peer.verdict(3, Verdict::Accept, now), []);
    assert_eq!(peer.verdict(2, Verdict::Reject(rejection.clone()), now), []);
    assert_eq!(peer.awaiting_verdicts(), 3);
    let later = now + Duration::from_millis(1500);
    let out = peer.verdict(1, Verdict::Accept, later);
    let echo = EPOCH_MS + 1500.0;
    assert_eq!(
        out,
        [
            acked("e1"),
            Output::Write(Message::Acknowledgement {
                correlid: id("e2"),
                status: 1,
                error: Some(rejection),
            }),
            acked("e3"),
            // The accepted ones are echoed, one at a time; the rejected one is not.
            Output::Write(Message::Action {
                id: Value::Number(echo),
                kind: "ping".into(),
                parameters: Value::Map(vec![("n".into(), id("e1"))]),
            }),
        ]
    );
    assert_eq!(peer.awaiting_verdicts(), 0);
    assert_eq!(peer.unacked().count(), 2);
    assert!(peer.unacked().all(|q| q.ticket.is_none()));
}

#[test]
fn an_event_id_waiting_for_its_verdict_is_a_copy_not_a_slice_of_the_frame() {
    // A binary id is decoded as a slice of its frame, and the embedder's JavaScript gets a
    // Buffer over those bytes: the id kept for the acknowledgement must be a copy, so that
    // it keeps no 10 MiB frame alive and no write into that Buffer changes it.
    let now = Instant::now();
    let mut peer = deciding(false, now);
    let sent = vec![7u8; 100_000];
    let frame = Message::Event {
        id: Value::Binary(sent.clone().into()),
        kind: "ping".into(),
        bundle: Value::Binary(vec![1u8; 1_000_000].into()),
    }
    .to_frame();
    let body = frame.body.as_ptr_range();
    let out = peer.receive(Message::from_frame(&frame).unwrap(), now);
    drop(frame);
    let Some(Output::Emit(Notice::Event { number, .. })) = out.first() else {
        panic!("{out:?}")
    };
    let number = *number;
    drop(out);
    let Value::Binary(kept) = &peer.pending[0].id else {
        panic!("{:?}", peer.pending[0].id)
    };
    let kept = kept.as_ptr_range();
    assert!(
        kept.end <= body.start || body.end <= kept.start,
        "the id kept for the verdict is a slice of the frame"
    );
    let out = peer.verdict(number, Verdict::Accept, now);
    assert_eq!(writes(&out), [ack_of(Value::Binary(sent.into()))]);
}

#[test]
fn verdicts_that_wait_for_nothing_are_ignored() {
    let now = Instant::now();
    let mut peer = deciding(false, now);
    peer.receive(event("e1"), now);
    assert_eq!(peer.verdict(9, Verdict::Accept, now), []);
    assert_eq!(peer.verdict(1, Verdict::Accept, now), [acked("e1")]);
    assert_eq!(peer.verdict(1, Verdict::Accept, now), []);
    let rejected = ErrorBody {
        code: None,
        message: "Event rejected.".into(),
    };
    assert_eq!(peer.verdict(1, Verdict::Reject(rejected), now), []);
}

#[test]
fn echoes_go_out_one_at_a_time_each_after_the_previous_is_acknowledged() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let echo = |n: &str, id: f64| Message::Action {
        id: Value::Number(id),
        kind: "ping".into(),
        parameters: Value::Map(vec![("n".into(), Value::String(n.into()))]),
    };
    let out = peer.receive(event("e1"), now);
    assert!(matches!(
        out[0],
        Output::Emit(Notice::Event { decide: false, .. })
    ));
    assert_eq!(writes(&out), [ack_of(id("e1")), echo("e1", EPOCH_MS)]);
    let t2 = now + Duration::from_millis(20);
    assert_eq!(writes(&peer.receive(event("e2"), t2)), [ack_of(id("e2"))]);
    assert_eq!(peer.unacked().count(), 2);
    let out = peer.receive(ack_of(Value::Number(EPOCH_MS)), t2);
    assert_eq!(
        out,
        [
            Output::Emit(Notice::Acknowledgement {
                ticket: None,
                correlid: Value::Number(EPOCH_MS),
                status: 0,
                error: None,
            }),
            Output::Write(echo("e2", EPOCH_MS + 20.0)),
        ]
    );
    assert_eq!(
        writes(&peer.receive(ack_of(Value::Number(EPOCH_MS + 20.0)), t2)),
        []
    );
    assert_eq!(peer.unacked().count(), 0);
    // Echoes are dropped, not handed back, when the connection ends.
    peer.receive(event("e3"), t2);
    assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
}

#[test]
fn unwatched_events_are_not_reported_but_still_acknowledged() {
    let now = Instant::now();
    let mut peer = live(
        PeerConfig {
            echo: false,
            event_notices: false,
            ..PeerConfig::default()
        },
        now,
    );
    assert_eq!(peer.receive(event("e1"), now), [acked("e1")]);
    peer.set_event_notices(true);
    let out = peer.receive(event("e2"), now);
    assert!(matches!(
        &out[..],
        [
            Output::Emit(Notice::Event { number: 2, .. }),
            Output::Write(_)
        ]
    ));
}

#[test]
fn live_actions_wait_for_the_action_in_flight() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let (a1, a2) = (action("a1", Some(1)), action("a2", Some(2)));
    assert_eq!(peer.queue(a1.clone()), [written(&a1)]);
    assert_eq!(peer.queue(a2.clone()), []);
    let out = peer.receive(ack_of(id("a1")), now);
    assert_eq!(out.last(), Some(&written(&a2)));
    assert_eq!(peer.in_flight(), Some(&a2));
}

#[test]
fn a_frame_over_10_mib_is_answered_with_bye_im491() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let oversize = || Err(FrameError::Oversize { frame_len: 1 << 30 });
    let out = peer.handle_frame(oversize(), now);
    assert_violation(
        &out,
        ErrorCode::BufferExceeded,
        "Maximum buffer size exceeded.",
        now,
    );
    assert_eq!(peer.phase(), Phase::Closing);
    // Nothing else is answered while saying goodbye.
    assert_eq!(peer.receive(event("e1"), now), []);
    assert_eq!(peer.handle_frame(oversize(), now), []);
    assert_eq!(peer.kick(now), []);
}

#[test]
fn a_stream_that_ends_inside_a_frame_drops_the_socket_quietly() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let out = peer.handle_frame(Err(FrameError::Truncated { buffered: 3 }), now);
    assert_eq!(out, [Output::Drop]);
    assert_eq!(peer.poll_timeout(), None);
    assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
}

#[test]
fn an_event_before_hello_is_answered_with_bye_eproto() {
    let now = Instant::now();
    let mut peer = connected(PeerConfig::default(), now);
    let out = peer.receive(event("e1"), now);
    assert_violation(&out, ErrorCode::Proto, "HELLO expected.", now);
    assert_eq!(peer.poll_timeout(), Some(now + LINGER));
    assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
    assert_eq!(peer.poll_timeout(), None);
}

#[test]
fn an_event_before_drained_is_answered_with_bye_eproto() {
    let now = Instant::now();
    let mut peer = connected(PeerConfig::default(), now);
    peer.receive(Message::hello("pi"), now);
    let a1 = action("a1", Some(1));
    peer.held(Some(a1));
    let out = peer.receive(event("e1"), now);
    assert_violation(
        &out,
        ErrorCode::Proto,
        "Event received before DRAINED.",
        now,
    );
}

#[test]
fn a_second_hello_is_answered_with_bye_eproto() {
    for holding in [true, false] {
        let now = Instant::now();
        let mut peer = if holding {
            let mut peer = connected(PeerConfig::default(), now);
            peer.receive(Message::hello("pi"), now);
            peer
        } else {
            live(PeerConfig::default(), now)
        };
        let out = peer.receive(Message::hello("pi"), now);
        assert_violation(&out, ErrorCode::Proto, "Unexpected HELLO.", now);
    }
}

#[test]
fn messages_only_a_server_sends_are_answered_with_bye_eproto() {
    let now = Instant::now();
    let action = Message::Action {
        id: id("x"),
        kind: "t".into(),
        parameters: Value::Nil,
    };
    for (message, name) in [
        (Message::Welcome, "Welcome"),
        (Message::Drained, "Drained"),
        (action, "Action"),
    ] {
        let mut peer = live(PeerConfig::default(), now);
        let out = peer.receive(message.clone(), now);
        let expected = format!("Unexpected {name} from a client.");
        assert_violation(&out, ErrorCode::Proto, &expected, now);
        // Before HELLO, the same messages are a missing HELLO.
        let mut peer = connected(PeerConfig::default(), now);
        let out = peer.receive(message, now);
        assert_violation(&out, ErrorCode::Proto, "HELLO expected.", now);
    }
}

#[test]
fn an_acknowledgement_for_no_action_or_another_is_answered_with_bye_eproto() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let out = peer.receive(ack_of(id("nothing")), now);
    let message = "Received acknowledgement even if there is no action in flight.";
    assert_violation(&out, ErrorCode::Proto, message, now);

    let mut peer = live(PeerConfig::default(), now);
    let a1 = action("a1", Some(1));
    peer.queue(a1.clone());
    let out = peer.receive(ack_of(id("a2")), now);
    let message = "Received acknowledgement for different action.";
    assert_violation(&out, ErrorCode::Proto, message, now);
    assert_eq!(peer.in_flight(), Some(&a1));
}

#[test]
fn an_unreadable_frame_is_answered_with_bye_eproto_and_its_reason() {
    let now = Instant::now();
    let mut peer = connected(PeerConfig::default(), now);
    let frame = Frame {
        token: 0x99,
        body: Bytes::new(),
    };
    let out = peer.handle_frame(Ok(frame), now);
    assert_violation(&out, ErrorCode::Proto, "Unknown message token 0x99.", now);
    // An undecodable body, likewise.
    let mut peer = connected(PeerConfig::default(), now);
    let frame = Frame {
        token: 0x01,
        body: Bytes::from_static(&[0xc1]),
    };
    let out = peer.handle_frame(Ok(frame), now);
    assert!(
        matches!(
            &out[0],
            Output::Emit(Notice::ClientError { code: ErrorCode::Proto, message })
                if message.starts_with("Failed to deserialize packet.")
        ),
        "{out:?}"
    );
}

#[test]
fn kick_says_bye_without_a_body_and_the_goodbye_is_bounded() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let a1 = action("a1", Some(1));
    peer.queue(a1.clone());
    let out = peer.kick(now);
    assert_eq!(
        out,
        [
            Output::Write(Message::Bye { error: None }),
            Output::Shutdown { linger: false },
        ]
    );
    assert_eq!(peer.kick(now), []);
    assert_eq!(peer.poll_timeout(), Some(now + LINGER));
    // Early and late timer calls: only an expired deadline drops the socket.
    assert_eq!(peer.handle_timeout(now + Duration::from_secs(9)), []);
    assert_eq!(peer.handle_timeout(now + LINGER), [Output::Drop]);
    assert_eq!(peer.handle_timeout(now + LINGER * 2), []);
    assert_eq!(
        peer.closed(),
        [Output::HandBack(vec![a1]), Output::Emit(Notice::Disconnect)]
    );
}

#[test]
fn bye_from_the_client_ends_the_connection_silently() {
    let now = Instant::now();
    let mut peer = live(PeerConfig::default(), now);
    let out = peer.receive(Message::Bye { error: None }, now);
    assert_eq!(out, [Output::Drop]);
    assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
}

#[test]
fn the_tls_handshake_is_timed_and_reported() {
    let now = Instant::now();
    let limit = Duration::from_secs(10);
    let config = PeerConfig {
        handshake_timeout: Some(limit),
        ..PeerConfig::default()
    };
    // Too slow: ETIMEDOUT, and no disconnect for a connection never announced.
    let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
    assert_eq!(peer.accepted(now), []);
    assert_eq!(peer.poll_timeout(), Some(now + limit));
    assert_eq!(peer.receive(Message::hello("pi"), now), []);
    assert_eq!(peer.handle_timeout(now + limit / 2), []);
    let out = peer.handle_timeout(now + limit);
    assert_eq!(
        out,
        [
            Output::Emit(Notice::ClientError {
                code: ErrorCode::TimedOut,
                message: "TLS handshake timed out.".into(),
            }),
            Output::Drop,
        ]
    );
    assert_eq!(peer.closed(), []);

    // Failed: ETLS with the reason.
    let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
    peer.accepted(now);
    let out = peer.handshake_failed("bad certificate");
    assert_eq!(
        out,
        [
            Output::Emit(Notice::ClientError {
                code: ErrorCode::Tls,
                message: "TLS handshake failed: bad certificate".into(),
            }),
            Output::Drop,
        ]
    );
    assert_eq!(peer.poll_timeout(), None);

    // Kicked during the handshake: announced, then BYE at once.
    let mut peer = Peer::new(config, now, EPOCH_MS);
    peer.accepted(now);
    assert_eq!(peer.kick(now), []);
    let later = now + Duration::from_secs(1);
    assert_eq!(
        peer.secured(later),
        [
            Output::Emit(Notice::Connection),
            Output::Write(Message::Bye { error: None }),
            Output::Shutdown { linger: false },
        ]
    );
    assert_eq!(peer.poll_timeout(), Some(later + LINGER));
}

#[test]
fn a_peer_that_says_no_hello_in_time_gets_bye_etimedout() {
    let now = Instant::now();
    let limit = Duration::from_millis(300);
    let config = PeerConfig {
        hello_timeout: Some(limit),
        ..PeerConfig::default()
    };
    let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
    assert_eq!(peer.accepted(now), [Output::Emit(Notice::Connection)]);
    assert_eq!(peer.poll_timeout(), Some(now + limit));
    assert_eq!(peer.handle_timeout(now + limit / 2), []);
    let late = now + limit;
    assert_violation(
        &peer.handle_timeout(late),
        ErrorCode::TimedOut,
        "No HELLO within 300 ms.",
        late,
    );
    assert_eq!(peer.phase(), Phase::Closing);

    // HELLO in time stops the deadline (no idle limit here).
    let mut peer = Peer::new(config, now, EPOCH_MS);
    peer.accepted(now);
    peer.receive(Message::hello("pi"), now + limit / 2);
    assert_eq!(peer.poll_timeout(), None);
    assert_eq!(peer.handle_timeout(now + limit), []);
}

#[test]
fn the_hello_deadline_starts_after_the_tls_handshake() {
    let now = Instant::now();
    let config = PeerConfig {
        handshake_timeout: Some(Duration::from_secs(10)),
        hello_timeout: Some(Duration::from_secs(1)),
        ..PeerConfig::default()
    };
    let mut peer = Peer::new(config, now, EPOCH_MS);
    peer.accepted(now);
    let secured = now + Duration::from_secs(5);
    assert_eq!(peer.secured(secured), [Output::Emit(Notice::Connection)]);
    assert_eq!(peer.poll_timeout(), Some(secured + Duration::from_secs(1)));
}

#[test]
fn a_peer_idle_past_the_limit_gets_bye_etimedout_and_one_that_talks_does_not() {
    let now = Instant::now();
    let limit = Duration::from_secs(1);
    let config = PeerConfig {
        echo: false,
        idle_timeout: Some(limit),
        ..PeerConfig::default()
    };
    let mut peer = connected(config, now);
    peer.receive(Message::hello("pi"), now);
    assert_eq!(peer.poll_timeout(), Some(now + limit));
    peer.held(None);
    // Heard at +600 ms: the timer, due at +1 s, is armed again for +1.6 s.
    let t1 = now + Duration::from_millis(600);
    assert_eq!(
        peer.receive(event("e1"), t1),
        [
            Output::Emit(Notice::Event {
                number: 1,
                id: id("e1"),
                kind: "ping".into(),
                bundle: Value::Map(vec![("n".into(), id("e1"))]),
                decide: false,
            }),
            acked("e1")
        ]
    );
    assert_eq!(peer.handle_timeout(now + limit), []);
    assert_eq!(peer.poll_timeout(), Some(t1 + limit));
    // Not read meanwhile (the embedder was behind): that time is not idleness.
    let t2 = t1 + Duration::from_millis(900);
    peer.unread_until(t2);
    assert_eq!(peer.handle_timeout(t1 + limit), []);
    assert_eq!(peer.poll_timeout(), Some(t2 + limit));
    assert_violation(
        &peer.handle_timeout(t2 + limit),
        ErrorCode::TimedOut,
        "Idle for 1000 ms.",
        t2 + limit,
    );
}

#[test]
fn a_peer_that_leaves_too_many_echoes_unacknowledged_gets_bye_equeuefull() {
    let now = Instant::now();
    let config = PeerConfig {
        event_notices: false,
        max_echoes: 2,
        ..PeerConfig::default()
    };
    let message = "Too many unacknowledged echoes: more than 2 or 67108864 bytes of them.";
    let mut peer = live(config.clone(), now);
    // e1's echo goes out; e2's and e3's wait behind it: the bound, not over it.
    assert_eq!(writes(&peer.receive(event("e1"), now)).len(), 2);
    assert_eq!(peer.receive(event("e2"), now), [acked("e2")]);
    assert_eq!(peer.receive(event("e3"), now), [acked("e3")]);
    let out = peer.receive(event("e4"), now);
    assert_eq!(out[0], acked("e4"));
    assert_violation(&out[1..], ErrorCode::QueueFull, message, now);
    assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);

    // A peer that acknowledges its echoes keeps the queue short and stays.
    let mut peer = live(config, now);
    for n in 0..10 {
        let name = format!("e{n}");
        let out = peer.receive(event(&name), now);
        let echo = peer.in_flight().unwrap().action.id.clone();
        assert_eq!(writes(&out).len(), 2, "{out:?}");
        peer.receive(ack_of(echo), now);
    }
    assert_eq!(peer.phase(), Phase::Live);

    // The bytes are bounded too.
    let mut peer = live(
        PeerConfig {
            event_notices: false,
            max_echo_bytes: 1000,
            ..PeerConfig::default()
        },
        now,
    );
    let big = |n: &str| Message::Event {
        id: id(n),
        kind: "blob".into(),
        bundle: Value::Binary(bytes::Bytes::from(vec![0u8; 600])),
    };
    peer.receive(big("b1"), now);
    assert_eq!(peer.receive(big("b2"), now), [acked("b2")]);
    let out = peer.receive(big("b3"), now);
    assert!(matches!(
        &out[1],
        Output::Emit(Notice::ClientError {
            code: ErrorCode::QueueFull,
            ..
        })
    ));
}
