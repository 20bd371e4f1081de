//! The state machine's tests: its unit tests and the property test that throws any input
//! sequence at it.

use super::*;
use crate::protocol::Token;
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::HashMap;

fn text(s: &str) -> Value {
    Value::String(s.into())
}

fn event(seq: u64) -> OutgoingEvent {
    OutgoingEvent::new(seq, text(&format!("e{seq}")), "t", Value::Nil)
}

fn ack(seq: u64) -> Message {
    Message::Acknowledgement {
        correlid: text(&format!("e{seq}")),
        status: 0,
        error: None,
    }
}

fn acked(seq: u64) -> Output {
    Output::Emit(Notice::Acknowledgement {
        correlid: text(&format!("e{seq}")),
        status: 0,
        error: None,
    })
}

fn done(seq: u64) -> Output {
    Output::Emit(Notice::EventDone {
        seq,
        result: Ok(()),
    })
}

fn closed(seq: u64) -> Output {
    Output::Emit(Notice::EventDone {
        seq,
        result: Err(SessionError::new(ErrorCode::Closed, "Client closed.")),
    })
}

fn write(seq: u64) -> Output {
    Output::Write(event(seq).frame)
}

fn emit(notice: Notice) -> Output {
    Output::Emit(notice)
}

fn proto(message: &str) -> Output {
    emit(Notice::Error(SessionError::new(ErrorCode::Proto, message)))
}

fn recovered(code: ErrorCode, message: &str) -> Output {
    emit(Notice::Recovered(SessionError::new(code, message)))
}

fn hello() -> Output {
    Output::Write(Message::hello("dev").to_bytes())
}

fn config() -> SessionConfig {
    SessionConfig::new("dev")
}

/// The delays of the original: a fixed 1 s before reconnecting, no timeouts.
fn timing() -> Timing {
    Timing {
        reconnect_delay: ms(1000),
        max_reconnect_delay: ms(1000),
        connect_timeout: None,
        ack_timeout: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

thread_local! {
    /// The test's clock: it moves only when [`fire`] fires a timer.
    static CLOCK: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The test's time now.
fn now() -> Instant {
    CLOCK.with(|c| {
        let at = c.get().unwrap_or_else(Instant::now);
        c.set(Some(at));
        at
    })
}

/// Fires `timer` if it is armed: the clock moves to its deadline (every timer due by then
/// fires). Nothing happens when it is not armed.
fn fire(s: &mut Session, timer: Timer) -> Vec<Output> {
    let Some(at) = s.deadline(timer) else {
        return Vec::new();
    };
    let at = at.max(now());
    CLOCK.with(|c| c.set(Some(at)));
    s.handle_timeout(at)
}

/// How long until `timer` expires, if it is armed.
fn left(s: &Session, timer: Timer) -> Option<Duration> {
    s.deadline(timer)
        .map(|at| at.saturating_duration_since(now()))
}

/// Draws given in advance, then 0.5.
struct Draws(VecDeque<f64>);

impl Random for Draws {
    fn draw(&mut self) -> f64 {
        self.0.pop_front().unwrap_or(0.5)
    }
}

fn draws(values: &[f64]) -> Draws {
    Draws(values.iter().copied().collect())
}

fn session(config: SessionConfig) -> Session {
    Session::new(config, timing(), draws(&[]))
}

/// A session through connect, HELLO and WELCOME, not yet drained.
fn welcomed(config: SessionConfig) -> Session {
    let mut s = session(config);
    assert_eq!(s.connect(now()), [Output::Connect]);
    assert_eq!(s.connected(), [hello()]);
    assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
    s
}

fn drained(config: SessionConfig) -> Session {
    let mut s = welcomed(config);
    assert_eq!(s.receive(Message::Drained, now()), [emit(Notice::Drain)]);
    s
}

fn refused() -> SessionError {
    SessionError::new(
        ErrorCode::Io("ECONNREFUSED".into()),
        "connect ECONNREFUSED 127.0.0.1:7777",
    )
}

#[test]
fn happy_path() {
    let mut s = session(config());
    assert_eq!(s.phase(), Phase::Idle);
    assert_eq!(s.send(event(1), now()), []);
    assert_eq!(s.connect(now()), [Output::Connect]);
    assert_eq!(s.connect(now()), [], "already connecting");
    let mut expected = bytes::BytesMut::new();
    Message::hello("dev").encode(&mut expected);
    assert_eq!(s.connected(), [Output::Write(expected.freeze())]);
    assert_eq!(s.phase(), Phase::AwaitingWelcome);
    assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
    let action = Message::Action {
        id: Value::Number(5.0),
        kind: "reboot".into(),
        parameters: Value::Nil,
    };
    assert_eq!(
        s.receive(action, now()),
        [emit(Notice::Action {
            id: Value::Number(5.0),
            key: Value::Number(5.0).into(),
            kind: "reboot".into(),
            parameters: Value::Nil,
        })]
    );
    assert_eq!(s.send(event(2), now()), [], "not drained yet");
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
    assert!(s.is_drained());
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
    assert_eq!(s.receive(ack(2), now()), [acked(2), done(2)]);
    assert_eq!(s.send(event(3), now()), [write(3)]);
    assert_eq!(s.connect(now()), [], "already connected");
}

fn stored(seq: u64, number: u64) -> OutgoingEvent {
    OutgoingEvent {
        stored: Some(number),
        ..event(seq)
    }
}

#[test]
fn a_stored_event_is_forgotten_when_answered_or_refused_and_kept_when_closed() {
    let mut s = drained(SessionConfig {
        max_in_flight: 2,
        max_queue_size: 3,
        ..config()
    });
    assert_eq!(s.send(stored(1, 11), now()), [write(1)]);
    assert_eq!(s.send(stored(2, 12), now()), [write(2)]);
    // Acknowledged out of order: forgotten at once, the callback waits for event 1.
    assert_eq!(s.receive(ack(2), now()), [acked(2), Output::Forget(12)]);
    let rejected = Message::Acknowledgement {
        correlid: text("e1"),
        status: 1,
        error: Some(ErrorBody {
            code: Some("E1".into()),
            message: "no".into(),
        }),
    };
    let out = s.receive(rejected, now());
    assert_eq!(out[1], Output::Forget(11), "rejected is answered too");
    assert_eq!(out.len(), 4, "{out:?}");
    // Restored events pass the queue's limit; a stored event refused by it is forgotten.
    for seq in 3..6 {
        s.restore(stored(seq, 10 + seq), now());
    }
    let out = s.send(stored(6, 16), now());
    assert_eq!(out[0], Output::Forget(16));
    assert!(matches!(
        &out[1],
        Output::Emit(Notice::EventDone { seq: 6, result: Err(e) }) if e.code == ErrorCode::QueueFull
    ));
    // close() fails the rest: they stay stored.
    let out = s.close(false);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Forget(_))),
        "{out:?}"
    );
}

#[test]
fn ten_events_are_sent_one_at_a_time_in_order() {
    let mut s = drained(config());
    assert_eq!(s.send(event(0), now()), [write(0)]);
    for seq in 1..10 {
        assert_eq!(s.send(event(seq), now()), []);
    }
    assert_eq!((s.queued(), s.in_flight()), (9, 1));
    for seq in 0..9 {
        assert_eq!(
            s.receive(ack(seq), now()),
            [acked(seq), done(seq), write(seq + 1)]
        );
    }
    assert_eq!(s.receive(ack(9), now()), [acked(9), done(9)]);
    assert_eq!(s.pending(), 0);
}

#[test]
fn answered_events_are_timed_from_send_to_acknowledgement_only_when_asked() {
    let t0 = now();
    let mut timed = drained(SessionConfig {
        time_events: true,
        ..config()
    });
    assert_eq!(timed.send(event(0), t0), [write(0)]);
    assert_eq!(timed.send(event(1), t0 + ms(10)), []);
    // Accepted after 250 ms; refused 100 ms after that (sent when the first was answered, but
    // queued at 10 ms).
    timed.receive(ack(0), t0 + ms(250));
    let refusal = Message::Acknowledgement {
        correlid: text("e1"),
        status: 1,
        error: None,
    };
    timed.receive(refusal, t0 + ms(350));
    assert_eq!(timed.take_durations(), [0.25, 0.34]);
    assert_eq!(timed.take_durations(), Vec::<f64>::new(), "taken once");
    // Closed unanswered: no verdict, no duration.
    assert_eq!(timed.send(event(2), t0 + ms(400)), [write(2)]);
    timed.close(false);
    assert_eq!(timed.take_durations(), Vec::<f64>::new());

    let mut untimed = drained(config());
    assert_eq!(untimed.send(event(0), t0), [write(0)]);
    untimed.receive(ack(0), t0 + ms(250));
    assert_eq!(untimed.take_durations(), Vec::<f64>::new());
}

#[test]
fn a_failed_acknowledgement_fails_the_callback() {
    let mut s = drained(config());
    s.send(event(1), now());
    s.send(event(2), now());
    let error = ErrorBody {
        code: Some("IM4".into()),
        message: "Invalid bundle.".into(),
    };
    let failed = |seq: u64, error: &ErrorBody| Message::Acknowledgement {
        correlid: text(&format!("e{seq}")),
        status: 1,
        error: Some(error.clone()),
    };
    assert_eq!(
        s.receive(failed(1, &error), now()),
        [
            emit(Notice::Acknowledgement {
                correlid: text("e1"),
                status: 1,
                error: Some(error.clone()),
            }),
            emit(Notice::EventDone {
                seq: 1,
                result: Err(SessionError::new(
                    ErrorCode::Gateway("IM4".into()),
                    "Invalid bundle."
                )),
            }),
            write(2),
        ]
    );
    let uncoded = ErrorBody {
        code: None,
        message: "No.".into(),
    };
    let out = s.receive(failed(2, &uncoded), now());
    assert_eq!(
        out[1],
        emit(Notice::EventDone {
            seq: 2,
            result: Err(SessionError::new(ErrorCode::Ack, "No.")),
        })
    );
}

#[test]
fn an_acknowledgement_frame_is_handled_as_its_decoded_message_whatever_it_answers() {
    // Two sessions in step: one is given each acknowledgement as the frame read from the
    // wire (a plain one skips the decoder), the other as the decoded message.
    let mut framed = drained(config());
    let mut decoded = drained(config());
    let both = |framed: &mut Session, decoded: &mut Session, message: Message| {
        let frame = message.to_frame();
        let from_frame = framed.handle_frame(Ok(frame), now());
        assert_eq!(from_frame, decoded.receive(message, now()));
        from_frame
    };
    for seq in 0..3 {
        framed.send(event(seq), now());
        decoded.send(event(seq), now());
    }
    assert_eq!(
        both(&mut framed, &mut decoded, ack(0)),
        [acked(0), done(0), write(1)]
    );
    let number_id = Message::Acknowledgement {
        correlid: Value::Number(1.0),
        status: 0,
        error: None,
    };
    // Not the event in flight: the connection is dropped all the same.
    assert_eq!(
        both(&mut framed, &mut decoded, ack(7))[0],
        proto(DIFFERENT_EVENT)
    );
    assert_eq!(framed.phase(), decoded.phase());
    // No connection: ignored alike.
    assert_eq!(both(&mut framed, &mut decoded, ack(1)), []);
    assert_eq!(both(&mut framed, &mut decoded, number_id), []);
    assert_eq!(
        (framed.queued(), framed.in_flight()),
        (decoded.queued(), decoded.in_flight())
    );
}

#[test]
fn an_acknowledgement_for_a_different_event_drops_the_connection() {
    let mut s = drained(config());
    s.send(event(1), now());
    assert_eq!(
        s.receive(ack(7), now()),
        [proto(DIFFERENT_EVENT), Output::CloseSocket]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    assert_eq!((s.queued(), s.in_flight()), (1, 0));
}

#[test]
fn an_acknowledgement_with_nothing_in_flight_drops_the_connection() {
    let mut s = drained(SessionConfig {
        auto_reconnect: false,
        ..config()
    });
    assert_eq!(
        s.receive(ack(1), now()),
        [
            proto(NO_EVENT_IN_QUEUE),
            Output::CloseSocket,
            emit(Notice::Disconnect)
        ]
    );
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn frames_out_of_place_are_skipped_and_the_connection_goes_on() {
    let mut s = welcomed(config());
    assert_eq!(
        s.receive(Message::Welcome, now()),
        [recovered(ErrorCode::Proto, "Received welcome twice.")]
    );
    assert_eq!(s.phase(), Phase::Receiving);
    let mut s = session(config());
    s.connect(now());
    s.connected();
    assert_eq!(
        s.receive(Message::Drained, now()),
        [recovered(
            ErrorCode::Proto,
            "Received drained before welcome."
        )]
    );
    assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
    let mut s = drained(config());
    let from_server = Message::Event {
        id: text("x"),
        kind: "t".into(),
        bundle: Value::Nil,
    };
    assert_eq!(
        s.receive(from_server, now()),
        [recovered(
            ErrorCode::Proto,
            "Received event, which only a client sends."
        )]
    );
    assert_eq!(
        s.receive(Message::hello("x"), now()),
        [recovered(
            ErrorCode::Proto,
            "Received hello, which only a client sends."
        )]
    );
    let unknown = SessionError::new(ErrorCode::Proto, "Unknown message token 0x09.");
    assert_eq!(
        s.ignored(unknown.clone()),
        [emit(Notice::Recovered(unknown))]
    );
    assert!(s.is_drained());
    assert_eq!(s.send(event(1), now()), [write(1)], "events still flow");
}

#[test]
fn an_undecodable_frame_ends_the_connection_quietly_unless_it_was_the_last() {
    let mut s = drained(SessionConfig {
        auto_reconnect: false,
        ..config()
    });
    let bad = SessionError::new(ErrorCode::Proto, "Failed to deserialize packet. truncated");
    assert_eq!(
        s.protocol_error(bad, now()),
        [
            Output::CloseSocket,
            proto("Failed to deserialize packet. truncated"),
            emit(Notice::Disconnect)
        ]
    );
    let mut s = drained(config());
    let bad = SessionError::new(ErrorCode::Proto, "Failed to deserialize packet. truncated");
    assert_eq!(
        s.protocol_error(bad, now()),
        [
            Output::CloseSocket,
            recovered(ErrorCode::Proto, "Failed to deserialize packet. truncated")
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    let mut s = drained(config());
    let timeout = SessionError::new(ErrorCode::TimedOut, "No acknowledgement.");
    assert_eq!(
        s.protocol_error(timeout.clone(), now()),
        [Output::CloseSocket, emit(Notice::Recovered(timeout))]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
}

#[test]
fn bye_with_an_error_is_reported_once() {
    let mut s = drained(SessionConfig {
        auto_reconnect: false,
        ..config()
    });
    let bye = Message::Bye {
        error: Some(ErrorBody {
            code: Some("IM401".into()),
            message: "Unauthorized.".into(),
        }),
    };
    assert_eq!(
        s.receive(bye, now()),
        [
            emit(Notice::Error(SessionError::new(
                ErrorCode::Gateway("IM401".into()),
                "Unauthorized."
            ))),
            Output::CloseSocket,
            emit(Notice::Disconnect)
        ]
    );
    assert_eq!(s.connection_lost(None, now()), [], "already handled");

    let mut s = drained(config());
    let bye = Message::Bye {
        error: Some(ErrorBody {
            code: None,
            message: "Go away.".into(),
        }),
    };
    assert_eq!(
        s.receive(bye, now()),
        [
            emit(Notice::Error(SessionError::new(ErrorCode::Bye, "Go away."))),
            Output::CloseSocket
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    let mut s = drained(config());
    assert_eq!(
        s.receive(Message::Bye { error: None }, now()),
        [Output::CloseSocket]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
}

#[test]
fn an_event_in_flight_is_resent_after_a_reconnect() {
    let mut s = drained(config());
    assert_eq!(s.send(event(1), now()), [write(1)]);
    s.send(event(2), now());
    let reset = SessionError::new(ErrorCode::ConnectionReset, "read ECONNRESET");
    assert_eq!(
        s.connection_lost(Some(reset.clone()), now()),
        [emit(Notice::Recovered(reset))]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    assert_eq!(s.phase(), Phase::WaitingToReconnect);
    assert_eq!((s.queued(), s.in_flight()), (2, 0));
    assert_eq!(
        fire(&mut s, Timer::Reconnect),
        [emit(Notice::Reconnect), Output::Connect]
    );
    assert_eq!(s.connected(), [hello()]);
    assert_eq!(s.receive(Message::Welcome, now()), [], "no second connect");
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
}

#[test]
fn a_kick_and_reconnect_then_close_give_each_notice_its_count() {
    let mut s = session(config());
    let mut all = Vec::new();
    all.extend(s.connect(now()));
    all.extend(s.connected());
    all.extend(s.receive(Message::Welcome, now()));
    all.extend(s.receive(Message::Drained, now()));
    all.extend(s.receive(Message::Bye { error: None }, now()));
    all.extend(s.connection_lost(None, now()));
    all.extend(fire(&mut s, Timer::Reconnect));
    all.extend(s.connected());
    all.extend(s.receive(Message::Welcome, now()));
    all.extend(s.receive(Message::Drained, now()));
    all.extend(s.close(false));
    all.extend(s.connection_lost(None, now()));
    all.extend(fire(&mut s, Timer::Reconnect));
    let count = |n: Notice| all.iter().filter(|o| **o == emit(n.clone())).count();
    assert_eq!(count(Notice::Connect), 1);
    assert_eq!(count(Notice::Drain), 2);
    assert_eq!(count(Notice::Reconnect), 1);
    assert_eq!(count(Notice::Disconnect), 1);
    assert!(!all
        .iter()
        .any(|o| matches!(o, Output::Emit(Notice::Error(_)))));
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn giving_up_before_any_welcome_reports_the_last_error() {
    let mut s = session(SessionConfig {
        max_reconnect_attempts: 2,
        ..config()
    });
    s.connect(now());
    let quiet = [emit(Notice::Recovered(refused()))];
    assert_eq!(s.connect_failed(refused(), now()), quiet);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    assert_eq!(s.connect_failed(refused(), now()), quiet);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    let last = SessionError::new(ErrorCode::TimedOut, "timed out");
    assert_eq!(
        s.connect_failed(last.clone(), now()),
        [emit(Notice::Error(last))]
    );
    assert_eq!(s.phase(), Phase::Idle);
    assert_eq!(fire(&mut s, Timer::Reconnect), []);
    // A connection that closes before WELCOME is a failed attempt too.
    let mut s = session(SessionConfig {
        max_reconnect_attempts: 1,
        ..config()
    });
    s.connect(now());
    s.connect_failed(refused(), now());
    fire(&mut s, Timer::Reconnect);
    s.connected();
    assert_eq!(
        s.connection_lost(None, now()),
        [emit(Notice::Error(SessionError::new(
            ErrorCode::ConnectionReset,
            "Connection closed before the gateway welcomed the client."
        )))]
    );
}

#[test]
fn giving_up_after_a_connection_disconnects() {
    let mut s = drained(SessionConfig {
        max_reconnect_attempts: 2,
        ..config()
    });
    s.send(event(1), now());
    let quiet = [emit(Notice::Recovered(refused()))];
    assert_eq!(s.connection_lost(None, now()), []);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    assert_eq!(s.connect_failed(refused(), now()), quiet);
    fire(&mut s, Timer::Reconnect);
    s.connected();
    // WELCOME starts the count again.
    assert_eq!(s.receive(Message::Welcome, now()), []);
    assert_eq!(s.connection_lost(None, now()), []);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    assert_eq!(s.connect_failed(refused(), now()), quiet);
    fire(&mut s, Timer::Reconnect);
    assert_eq!(
        s.connect_failed(refused(), now()),
        [emit(Notice::Recovered(refused())), emit(Notice::Disconnect)]
    );
    assert_eq!(s.pending(), 1, "the event waits for a later connect()");
    assert_eq!(s.close(false), [closed(1)]);
}

#[test]
fn close_fails_the_queue_in_order() {
    let mut s = drained(config());
    for seq in 1..=3 {
        s.send(event(seq), now());
    }
    assert_eq!(
        s.close(false),
        [
            Output::CloseSocket,
            emit(Notice::Disconnect),
            closed(1),
            closed(2),
            closed(3)
        ]
    );
    assert_eq!(s.pending(), 0);
    assert_eq!(s.close(false), []);
    assert_eq!(s.connected(), [Output::CloseSocket], "a stale connection");
}

#[test]
fn close_can_keep_the_queue_for_the_next_connect() {
    let mut s = drained(config());
    s.send(event(1), now());
    s.send(event(2), now());
    assert_eq!(
        s.close(true),
        [Output::CloseSocket, emit(Notice::Disconnect)]
    );
    assert_eq!(s.receive(ack(1), now()), [], "nothing is read after close");
    assert_eq!(s.connect(now()), [Output::Connect]);
    s.connected();
    assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
}

#[test]
fn close_during_the_reconnect_wait_stops_reconnecting() {
    let mut s = drained(config());
    s.send(event(1), now());
    assert_eq!(s.connection_lost(None, now()), []);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    assert_eq!(
        s.close(false),
        [emit(Notice::Disconnect), closed(1)],
        "no socket to close"
    );
    assert_eq!(left(&s, Timer::Reconnect), None);
    assert_eq!(fire(&mut s, Timer::Reconnect), []);
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn connect_during_the_reconnect_wait_connects_at_once() {
    let mut s = welcomed(config());
    s.connection_lost(None, now());
    assert_eq!(s.connect(now()), [Output::Connect]);
    assert_eq!(left(&s, Timer::Reconnect), None);
    assert_eq!(fire(&mut s, Timer::Reconnect), [], "the wait is over");
    s.connected();
    assert_eq!(s.receive(Message::Welcome, now()), [], "same cycle");
}

#[test]
fn without_auto_reconnect_a_connection_error_is_reported() {
    let no_reconnect = SessionConfig {
        auto_reconnect: false,
        ..config()
    };
    let mut s = session(no_reconnect.clone());
    s.send(event(1), now());
    s.connect(now());
    assert_eq!(
        s.connect_failed(refused(), now()),
        [emit(Notice::Error(refused()))]
    );
    assert_eq!(s.phase(), Phase::Idle);
    assert_eq!(s.pending(), 1);

    let mut s = drained(no_reconnect);
    s.send(event(1), now());
    let reset = SessionError::new(ErrorCode::ConnectionReset, "read ECONNRESET");
    assert_eq!(
        s.connection_lost(Some(reset.clone()), now()),
        [emit(Notice::Error(reset)), emit(Notice::Disconnect)]
    );
    assert_eq!(s.connect(now()), [Output::Connect]);
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
}

#[test]
fn an_oversize_frame_is_answered_with_bye_im491_and_ends_the_connection() {
    let mut s = drained(config());
    let bye = Message::Bye {
        error: Some(ErrorBody {
            code: Some("IM491".into()),
            message: "Maximum buffer size exceeded.".into(),
        }),
    };
    assert_eq!(
        s.buffer_exceeded(now()),
        [
            Output::Write(bye.to_bytes()),
            Output::CloseSocket,
            recovered(ErrorCode::BufferExceeded, "Maximum buffer size exceeded.")
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    assert_eq!(s.buffer_exceeded(now()), [], "no connection any more");
}

#[test]
fn a_full_queue_refuses_the_next_event_through_its_callback() {
    let mut s = session(SessionConfig {
        max_queue_size: 2,
        ..config()
    });
    assert_eq!(s.send(event(1), now()), []);
    assert_eq!(s.send(event(2), now()), []);
    match &s.send(event(3), now())[..] {
        [Output::Emit(Notice::EventDone {
            seq: 3,
            result: Err(err),
        })] => assert_eq!(err.code, "EQUEUEFULL"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.pending(), 2);
    // Room again once an event is done.
    s.connect(now());
    s.connected();
    s.receive(Message::Welcome, now());
    s.receive(Message::Drained, now());
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
    assert_eq!(s.send(event(4), now()), []);
    assert_eq!(s.pending(), 2);
}

#[test]
fn a_window_of_four_still_runs_callbacks_in_send_order() {
    let mut s = drained(SessionConfig {
        max_in_flight: 4,
        ..config()
    });
    let mut writes = Vec::new();
    for seq in 0..6 {
        writes.extend(s.send(event(seq), now()));
    }
    assert_eq!(writes, [write(0), write(1), write(2), write(3)]);
    assert_eq!(s.receive(ack(2), now()), [acked(2)]);
    assert_eq!(s.receive(ack(1), now()), [acked(1)]);
    assert_eq!(
        s.receive(ack(0), now()),
        [acked(0), done(0), done(1), done(2), write(4), write(5)]
    );
    assert_eq!(s.receive(ack(5), now()), [acked(5)]);
    assert_eq!(
        s.receive(ack(2), now()),
        [proto(DIFFERENT_EVENT), Output::CloseSocket]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    // 3 and 4 are re-sent; 5, already acknowledged, is not.
    fire(&mut s, Timer::Reconnect);
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(3), write(4)]
    );
    assert_eq!(s.receive(ack(4), now()), [acked(4)]);
    assert_eq!(
        s.receive(ack(3), now()),
        [acked(3), done(3), done(4), done(5)]
    );
}

#[test]
fn ack_action_answers_on_the_delivering_connection_only() {
    let mut s = drained(config());
    let action = |id: f64| Message::Action {
        id: Value::Number(id),
        kind: "x".into(),
        parameters: Value::Nil,
    };
    s.receive(action(1.0), now());
    s.receive(action(2.0), now());
    let expected = Message::Acknowledgement {
        correlid: Value::Number(1.0),
        status: 0,
        error: None,
    }
    .to_bytes();
    assert_eq!(
        s.ack_action(Value::Number(1.0), None),
        [Output::Write(expected)]
    );
    assert_eq!(s.ack_action(Value::Number(1.0), None), [], "acked already");
    let error = ErrorBody {
        code: Some("E1".into()),
        message: "Failed.".into(),
    };
    let mut expected = bytes::BytesMut::new();
    Message::Acknowledgement {
        correlid: Value::Number(2.0),
        status: 1,
        error: Some(error.clone()),
    }
    .encode(&mut expected);
    assert_eq!(
        s.ack_action(Value::Number(2.0), Some(error)),
        [Output::Write(expected.freeze())]
    );
    s.receive(action(3.0), now());
    s.connection_lost(None, now());
    fire(&mut s, Timer::Reconnect);
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(s.ack_action(Value::Number(3.0), None), []);
}

#[test]
fn each_delivery_of_an_action_id_is_acknowledged_once_among_many() {
    // 100,000 actions outstanding, one id delivered three times: every ack finds its id
    // whatever the order, each delivery answers once, and what is acked goes.
    let mut s = drained(config());
    let action = |id: Value| Message::Action {
        id,
        kind: "x".into(),
        parameters: Value::Nil,
    };
    let id = |n: u32| match n % 3 {
        0 => text(&format!("a{n}")),
        1 => Value::Number(f64::from(n)),
        _ => Value::Binary(Bytes::from(n.to_be_bytes().to_vec())),
    };
    for n in 0..100_000 {
        s.receive(action(id(n)), now());
    }
    let twice = Value::Array(vec![text("dup"), Value::Binary(Bytes::from_static(b"\0"))]);
    for _ in 0..3 {
        s.receive(action(twice.clone()), now());
    }
    let written = |id: &Value| {
        [Output::Write(
            Message::Acknowledgement {
                correlid: id.clone(),
                status: 0,
                error: None,
            }
            .to_bytes(),
        )]
    };
    for n in (0..100_000).rev().step_by(2).chain((0..100_000).step_by(2)) {
        assert_eq!(s.ack_action(id(n), None), written(&id(n)), "action {n}");
    }
    for n in [0, 1, 2, 99_999] {
        assert_eq!(s.ack_action(id(n), None), [], "action {n} acked already");
    }
    assert_eq!(s.ack_action(id(100_000), None), [], "never delivered");
    for _ in 0..3 {
        assert_eq!(s.ack_action(twice.clone(), None), written(&twice));
    }
    assert_eq!(
        s.ack_action(twice, None),
        [],
        "three deliveries, three acks"
    );
    assert_eq!(s.stats().actions_acked, 100_003);
}

/// [`timing`] with `connectTimeout` 300 ms and a backoff from 100 ms to 1 s.
fn backing_off() -> Timing {
    Timing {
        reconnect_delay: ms(100),
        max_reconnect_delay: ms(1000),
        connect_timeout: Some(ms(300)),
        ack_timeout: None,
    }
}

fn no_welcome(limit: u64) -> SessionError {
    SessionError::new(
        ErrorCode::TimedOut,
        format!("The gateway did not welcome the client within {limit} ms."),
    )
}

#[test]
fn the_session_judges_bad_frames_itself() {
    // An unknown token: skipped, and the connection goes on.
    let mut s = drained(config());
    let unknown = Frame {
        token: 0x99,
        body: Bytes::new(),
    };
    assert_eq!(
        s.handle_frame(Ok(unknown), now()),
        [recovered(ErrorCode::Proto, "Unknown message token 0x99.")]
    );
    assert!(s.is_drained());
    // A body that does not decode: the connection ends.
    let undecodable = Frame {
        token: Token::Action as u8,
        body: Bytes::from_static(&[0xc1]),
    };
    let out = s.handle_frame(Ok(undecodable), now());
    assert_eq!(out[0], Output::CloseSocket);
    assert!(
        matches!(&out[1], Output::Emit(Notice::Recovered(e)) if e.code == ErrorCode::Proto),
        "{out:?}"
    );
    assert!(s.armed(Timer::Reconnect));
    // The stream ended inside a frame: ECONNRESET.
    let mut s = drained(config());
    assert_eq!(
        s.handle_frame(Err(FrameError::Truncated { buffered: 3 }), now()),
        [recovered(
            ErrorCode::ConnectionReset,
            "Connection closed in the middle of a frame (3 bytes of it received)."
        )]
    );
    // Over 10 MiB: BYE IM491, and the connection ends.
    let mut s = drained(config());
    let out = s.handle_frame(Err(FrameError::Oversize { frame_len: 1 << 30 }), now());
    let bye = Message::Bye {
        error: Some(ErrorBody {
            code: Some("IM491".into()),
            message: MAXIMUM_BUFFER.into(),
        }),
    };
    assert_eq!(
        out[..2],
        [Output::Write(bye.to_bytes()), Output::CloseSocket]
    );
}

#[test]
fn a_connect_timeout_reconnects_with_backoff_and_jitter() {
    let mut s = Session::new(config(), backing_off(), draws(&[0.0, 0.5, 0.999]));
    let connect = [Output::Connect];
    assert_eq!(s.connect(now()), connect);
    assert_eq!(left(&s, Timer::Connect), Some(ms(300)));
    // Nothing after TCP: the attempt is abandoned; the first wait is half of 100 ms at
    // least (draw 0.0).
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [
            Output::CloseSocket,
            emit(Notice::Recovered(no_welcome(300)))
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(50)));
    assert_eq!(fire(&mut s, Timer::Connect), [], "fired already");
    let mut reconnect = vec![emit(Notice::Reconnect)];
    reconnect.extend(connect.clone());
    assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
    assert_eq!(left(&s, Timer::Connect), Some(ms(300)));
    // Connected but no WELCOME: the same timer, the same ending; the wait doubles (200 ms,
    // half of it fixed, draw 0.5).
    assert_eq!(s.connected(), [hello()]);
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [
            Output::CloseSocket,
            emit(Notice::Recovered(no_welcome(300)))
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(150)));
    assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
    match &s.connect_failed(refused(), now())[..] {
        [Output::Emit(Notice::Recovered(_))] => {
            assert_eq!(left(&s, Timer::Connect), None);
            let wait = left(&s, Timer::Reconnect).unwrap_or_default();
            assert!(wait > ms(399) && wait < ms(400), "400 ms at most: {wait:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
    assert_eq!(fire(&mut s, Timer::Reconnect), [], "reported twice");
    assert_eq!(s.connected(), [hello()]);
    // WELCOME stops the timer and starts the count again: back to 100 ms (draw 0.5 from
    // here on).
    assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
    assert_eq!(left(&s, Timer::Connect), None);
    assert_eq!(fire(&mut s, Timer::Connect), [], "stopped");
    assert_eq!(s.connection_lost(None, now()), []);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(75)));
}

#[test]
fn the_reconnect_wait_stays_within_its_bounds() {
    let mut s = Session::new(config(), backing_off(), Xorshift::new(42));
    s.connect(now());
    let mut waits = Vec::new();
    for attempt in 0..40u32 {
        s.connect_failed(refused(), now());
        if let Some(wait) = left(&s, Timer::Reconnect) {
            let grown = ms(100 << attempt.min(4)).min(ms(1000));
            assert!(wait >= grown / 2 && wait < grown, "{attempt}: {wait:?}");
            waits.push(wait);
        }
        fire(&mut s, Timer::Reconnect);
    }
    assert_eq!(waits.len(), 40);
    waits.sort();
    waits.dedup();
    assert!(waits.len() > 30, "jitter varies the waits");
}

#[test]
fn without_a_larger_maximum_the_delay_is_fixed() {
    let mut s = session(config());
    s.connect(now());
    for _ in 0..5 {
        s.connect_failed(refused(), now());
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
    }
}

#[test]
fn connect_timeouts_use_up_the_attempts_and_the_last_one_is_the_error() {
    let mut s = Session::new(
        SessionConfig {
            max_reconnect_attempts: 1,
            ..config()
        },
        Timing {
            max_reconnect_delay: ms(100),
            ..backing_off()
        },
        draws(&[]),
    );
    s.connect(now());
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [
            Output::CloseSocket,
            emit(Notice::Recovered(no_welcome(300)))
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(100)));
    fire(&mut s, Timer::Reconnect);
    s.connected();
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [Output::CloseSocket, emit(Notice::Error(no_welcome(300)))],
        "ETIMEDOUT, as any last error"
    );
    assert_eq!(s.phase(), Phase::Idle);
    assert!(
        Timer::ALL.iter().all(|&t| !s.armed(t)),
        "nothing keeps it alive"
    );
    for timer in Timer::ALL {
        assert_eq!(fire(&mut s, timer), []);
    }
    // Without autoReconnect the first timeout is the error.
    let mut s = Session::new(
        SessionConfig {
            auto_reconnect: false,
            ..config()
        },
        backing_off(),
        draws(&[]),
    );
    s.connect(now());
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [Output::CloseSocket, emit(Notice::Error(no_welcome(300)))]
    );
}

#[test]
fn the_ack_timeout_runs_while_events_are_in_flight() {
    let timing = Timing {
        ack_timeout: Some(ms(500)),
        ..timing()
    };
    let in_flight = SessionConfig {
        max_in_flight: 2,
        ..config()
    };
    let mut s = Session::new(in_flight.clone(), timing.clone(), draws(&[]));
    s.connect(now());
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain)],
        "nothing in flight"
    );
    let set = Some(ms(500));
    assert_eq!(s.send(event(1), now()), [write(1)]);
    assert_eq!(left(&s, Timer::Ack), set);
    // The clock moves on: a restarted timer runs from the new time.
    CLOCK.with(|c| c.set(Some(now() + ms(100))));
    assert_eq!(s.send(event(2), now()), [write(2)]);
    assert_eq!(left(&s, Timer::Ack), Some(ms(400)), "already running");
    assert_eq!(s.send(event(3), now()), [], "queued, not in flight");
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(3)],);
    assert_eq!(
        left(&s, Timer::Ack),
        set,
        "each acknowledgement starts it afresh"
    );
    assert_eq!(s.receive(ack(2), now()), [acked(2), done(2)]);
    assert_eq!(left(&s, Timer::Ack), set);
    assert_eq!(s.receive(ack(3), now()), [acked(3), done(3)]);
    assert_eq!(left(&s, Timer::Ack), None);
    assert_eq!(fire(&mut s, Timer::Ack), [], "stopped");
    s.send(event(4), now());
    assert_eq!(
        fire(&mut s, Timer::Ack),
        [
            Output::CloseSocket,
            recovered(
                ErrorCode::TimedOut,
                "No acknowledgement from the gateway within 500 ms."
            )
        ]
    );
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(4)],
    );
    assert_eq!(left(&s, Timer::Ack), set, "re-sent, and watched again");
    // A dropped connection stops it; so does an unexpected acknowledgement.
    assert_eq!(s.connection_lost(None, now()), []);
    assert_eq!(left(&s, Timer::Ack), None);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    fire(&mut s, Timer::Reconnect);
    s.connected();
    s.receive(Message::Welcome, now());
    s.receive(Message::Drained, now());
    assert_eq!(
        s.receive(ack(9), now()),
        [proto(DIFFERENT_EVENT), Output::CloseSocket]
    );
    assert_eq!(left(&s, Timer::Ack), None);
    assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    // Without autoReconnect the timeout is the error that ends the cycle.
    let mut s = Session::new(
        SessionConfig {
            auto_reconnect: false,
            ..in_flight
        },
        timing,
        draws(&[]),
    );
    s.connect(now());
    s.connected();
    s.receive(Message::Welcome, now());
    s.receive(Message::Drained, now());
    s.send(event(1), now());
    assert_eq!(
        fire(&mut s, Timer::Ack),
        [
            Output::CloseSocket,
            emit(Notice::Error(SessionError::new(
                ErrorCode::TimedOut,
                "No acknowledgement from the gateway within 500 ms."
            ))),
            emit(Notice::Disconnect),
        ]
    );
}

#[test]
fn close_stops_every_timer_that_runs() {
    let timing = Timing {
        ack_timeout: Some(ms(500)),
        ..backing_off()
    };
    let mut s = Session::new(config(), timing.clone(), draws(&[]));
    s.connect(now());
    assert_eq!(s.close(false), [Output::CloseSocket]);
    assert_eq!(left(&s, Timer::Connect), None);
    assert_eq!(
        fire(&mut s, Timer::Connect),
        [],
        "a late report does nothing"
    );

    let mut s = Session::new(config(), timing.clone(), draws(&[]));
    s.connect(now());
    s.connected();
    s.receive(Message::Welcome, now());
    s.receive(Message::Drained, now());
    s.send(event(1), now());
    assert_eq!(
        s.close(false),
        [Output::CloseSocket, emit(Notice::Disconnect), closed(1)]
    );
    assert_eq!(left(&s, Timer::Ack), None);
    assert_eq!(fire(&mut s, Timer::Ack), []);

    let mut s = Session::new(config(), timing, draws(&[1.0 / 64.0]));
    s.connect(now());
    s.connect_failed(refused(), now());
    assert!(s.armed(Timer::Reconnect));
    assert_eq!(s.close(true), []);
    assert_eq!(left(&s, Timer::Reconnect), None);
    assert_eq!(fire(&mut s, Timer::Reconnect), []);
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn stats_count_events_actions_and_reconnects() {
    let mut s = session(SessionConfig {
        max_queue_size: 3,
        ..config()
    });
    assert_eq!(s.stats(), SessionStats::default());
    s.send(event(1), now());
    assert_eq!((s.stats().queued, s.stats().in_flight), (1, 0));
    s.connect(now());
    s.connected();
    assert!(!s.stats().connected, "not welcomed yet");
    s.receive(Message::Welcome, now());
    assert!(s.stats().connected && !s.stats().drained);
    let action = Message::Action {
        id: Value::Number(1.0),
        kind: "a".into(),
        parameters: Value::Nil,
    };
    s.receive(action, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
    let stats = s.stats();
    assert_eq!((stats.queued, stats.in_flight, stats.drained), (0, 1, true));
    assert_eq!((stats.actions_received, stats.events_written), (1, 1));
    assert_eq!(
        s.event_writes(),
        (1, 0),
        "written once, nothing acknowledged"
    );
    assert_eq!(s.ack_action(Value::Number(1.0), None).len(), 1);
    assert_eq!(s.ack_action(Value::Number(1.0), None), [], "acked already");
    assert_eq!(s.stats().actions_acked, 1);
    s.send(event(2), now());
    s.send(event(3), now());
    assert_eq!(s.stats().queued, 2);
    s.send(event(4), now());
    assert_eq!(s.stats().failed_queue_full, 1);
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
    assert_eq!(s.event_writes(), (2, 1));
    let rejected = Message::Acknowledgement {
        correlid: text("e2"),
        status: 1,
        error: None,
    };
    s.receive(rejected, now());
    assert_eq!(s.event_writes(), (3, 2), "event 3 written as the third");
    assert_eq!((s.stats().acknowledged, s.stats().rejected), (1, 1));
    // The connection drops with event 3 in flight: it is written again, counted as re-sent.
    s.connection_lost(None, now());
    let stats = s.stats();
    assert_eq!((stats.queued, stats.in_flight), (1, 0));
    assert!(!stats.connected && !stats.drained);
    fire(&mut s, Timer::Reconnect);
    s.connected();
    s.receive(Message::Welcome, now());
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(3)]
    );
    assert_eq!(s.event_writes(), (4, 2));
    s.send(event(5), now());
    s.send(event(6), now());
    s.close(false);
    assert_eq!(
        s.stats(),
        SessionStats {
            queued: 0,
            in_flight: 0,
            acknowledged: 1,
            rejected: 1,
            resent: 1,
            failed_closed: 3,
            failed_queue_full: 1,
            actions_received: 1,
            actions_acked: 1,
            reconnects: 1,
            connected: false,
            drained: false,
            events_written: 4,
            last_acked_write: 2,
        }
    );
}

#[derive(Debug, Clone)]
enum Input {
    Connect,
    Connected,
    ConnectFailed,
    Receive(Message),
    ProtocolError,
    ConnectionLost(bool),
    /// The clock jumps to the earliest deadline, which fires (nothing when none is armed).
    Fire,
    /// The driver calls `handle_timeout` now, due or not: before any deadline it does nothing.
    Early,
    Send,
    AckAction(u8, bool),
    Close(bool),
    /// The server acknowledges one of the events in flight (random ids rarely hit one).
    AckInFlight(prop::sample::Index, bool),
    /// Whatever a well-behaved peer and driver would do next, so that runs get far.
    Progress,
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        3 => Just(Message::Welcome),
        3 => Just(Message::Drained),
        1 => Just(Message::Bye { error: None }),
        1 => Just(Message::Bye {
            error: Some(ErrorBody { code: None, message: "bye".into() })
        }),
        1 => Just(Message::hello("server")),
        1 => Just(Message::Event { id: Value::Nil, kind: "t".into(), bundle: Value::Nil }),
        2 => (0u8..4).prop_map(|id| Message::Action {
            id: Value::Number(f64::from(id)),
            kind: "a".into(),
            parameters: Value::Nil,
        }),
        8 => (0u64..12, 0i64..2).prop_map(|(seq, status)| Message::Acknowledgement {
            correlid: text(&format!("e{seq}")),
            status,
            error: (status != 0).then(|| ErrorBody { code: None, message: "no".into() }),
        }),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        2 => Just(Input::Connect),
        3 => Just(Input::Connected),
        1 => Just(Input::ConnectFailed),
        4 => arb_message().prop_map(Input::Receive),
        1 => Just(Input::ProtocolError),
        2 => any::<bool>().prop_map(Input::ConnectionLost),
        5 => Just(Input::Fire),
        1 => Just(Input::Early),
        4 => Just(Input::Send),
        1 => (0u8..4, any::<bool>()).prop_map(|(id, e)| Input::AckAction(id, e)),
        1 => any::<bool>().prop_map(Input::Close),
        20 => Just(Input::Progress),
        6 => (any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(i, ok)| Input::AckInFlight(i, ok)),
    ]
}

/// Checks what holds after every step: callbacks at most once and in send order,
/// `connect` and `disconnect` alternating, timers stopped only while they run and each
/// reconnect wait within its bounds.
#[derive(Default)]
struct Observer {
    done: HashMap<u64, usize>,
    last_done: Option<u64>,
    connected: bool,
    /// The reconnect deadline last seen.
    reconnect: Option<Instant>,
    /// (reconnect_delay, max_reconnect_delay)
    delays: (Duration, Duration),
}

impl Observer {
    fn see(&mut self, outputs: &[Output]) -> Result<(), TestCaseError> {
        for output in outputs {
            match output {
                Output::Emit(Notice::EventDone { seq, .. }) => {
                    let n = self.done.entry(*seq).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "seq {} done twice", seq);
                    prop_assert!(self.last_done < Some(*seq), "out of order: {}", seq);
                    self.last_done = Some(*seq);
                }
                Output::Emit(Notice::Connect) => {
                    prop_assert!(!self.connected, "connect twice");
                    self.connected = true;
                }
                Output::Emit(Notice::Disconnect) => {
                    prop_assert!(self.connected, "disconnect without connect");
                    self.connected = false;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The timers the driver runs are the ones the session's state needs: the reconnect wait
/// exactly while waiting, `connectTimeout` exactly during an attempt, `ackTimeout` exactly
/// while events are in flight, and none when idle (so the host may let its process exit).
/// Each reconnect wait is within its bounds, too.
fn check_timers(s: &Session, seen: &mut Observer, timing: &Timing) -> Result<(), TestCaseError> {
    let phase = s.phase();
    prop_assert_eq!(
        s.armed(Timer::Reconnect),
        phase == Phase::WaitingToReconnect
    );
    prop_assert_eq!(
        s.armed(Timer::Connect),
        timing.connect_timeout.is_some()
            && matches!(phase, Phase::Connecting | Phase::AwaitingWelcome)
    );
    prop_assert_eq!(
        s.armed(Timer::Ack),
        timing.ack_timeout.is_some() && s.in_flight() > 0
    );
    if phase == Phase::Idle {
        prop_assert_eq!(s.poll_timeout(), None);
    }
    prop_assert_eq!(
        s.poll_timeout(),
        Timer::ALL.into_iter().filter_map(|t| s.deadline(t)).min()
    );
    let reconnect = s.deadline(Timer::Reconnect);
    if let Some(at) = reconnect.filter(|_| reconnect != seen.reconnect) {
        let after = at - now();
        let (base, max) = seen.delays;
        let (low, high) = if max > base {
            (base / 2, max)
        } else {
            (base, base)
        };
        prop_assert!(
            low <= after && after <= high,
            "reconnect wait {:?} outside {:?}..={:?}",
            after,
            low,
            high
        );
    }
    seen.reconnect = reconnect;
    Ok(())
}

proptest! {
    #[test]
    fn any_input_sequence_is_safe(
        auto_reconnect in any::<bool>(),
        max_reconnect_attempts in 0u32..3,
        max_in_flight in 0usize..5,
        reconnect_delay in 0u64..2000,
        max_reconnect_delay in 0u64..20_000,
        connect_timeout in proptest::option::of(1u64..60_000),
        ack_timeout in proptest::option::of(1u64..60_000),
        seed in any::<u64>(),
        inputs in proptest::collection::vec(arb_input(), 0..80),
    ) {
        let timing = Timing {
            reconnect_delay: ms(reconnect_delay),
            max_reconnect_delay: ms(max_reconnect_delay),
            connect_timeout: connect_timeout.map(ms),
            ack_timeout: ack_timeout.map(ms),
        };
        let mut s = Session::new(
            SessionConfig {
                device_name: "dev".into(),
                auto_reconnect,
                max_reconnect_attempts,
                max_in_flight,
                max_queue_size: 0,
                time_events: true,
            },
            timing.clone(),
            Xorshift::new(seed),
        );
        let mut seen = Observer {
            delays: (timing.reconnect_delay, timing.max_reconnect_delay),
            ..Observer::default()
        };
        let mut next_seq = 0u64;
        // The notices the stats count, counted from the outputs instead.
        let mut tally = SessionStats::default();
        let count = |tally: &mut SessionStats, out: &[Output]| {
            for output in out {
                match output {
                    Output::Emit(Notice::Reconnect) => tally.reconnects += 1,
                    Output::Emit(Notice::Acknowledgement { status: 0, .. }) => {
                        tally.acknowledged += 1
                    }
                    Output::Emit(Notice::Acknowledgement { .. }) => tally.rejected += 1,
                    Output::Emit(Notice::EventDone { result: Err(err), .. })
                        if err.code == ErrorCode::Closed =>
                    {
                        tally.failed_closed += 1
                    }
                    _ => {}
                }
            }
        };
        for input in inputs {
            let out = match input {
                Input::Connect => s.connect(now()),
                Input::Connected => s.connected(),
                Input::ConnectFailed => s.connect_failed(refused(), now()),
                Input::Receive(message) => s.receive(message, now()),
                Input::ProtocolError => s.protocol_error(SessionError::new(ErrorCode::Proto, "bad"), now()),
                Input::ConnectionLost(clean) => {
                    s.connection_lost((!clean).then(refused), now())
                }
                // The clock jumps to the earliest deadline, as a driver's sleep ends.
                Input::Fire => match s.poll_timeout() {
                    Some(at) => {
                        let at = at.max(now());
                        CLOCK.with(|c| c.set(Some(at)));
                        s.handle_timeout(at)
                    }
                    None => Vec::new(),
                },
                // A call before any deadline (a driver woken early) does nothing.
                Input::Early => {
                    let early = s.poll_timeout().is_none_or(|at| at > now());
                    let out = s.handle_timeout(now());
                    if early {
                        prop_assert_eq!(&out, &Vec::new(), "a timeout before any deadline");
                    }
                    out
                }
                Input::Send => {
                    next_seq += 1;
                    s.send(event(next_seq), now())
                }
                Input::AckAction(id, failed) => s.ack_action(
                    Value::Number(f64::from(id)),
                    failed.then(|| ErrorBody { code: None, message: "x".into() }),
                ),
                Input::Close(keep_queue) => s.close(keep_queue),
                Input::Progress => match s.phase() {
                    Phase::Idle => s.connect(now()),
                    Phase::Connecting => s.connected(),
                    Phase::AwaitingWelcome => s.receive(Message::Welcome, now()),
                    Phase::Receiving => s.receive(Message::Drained, now()),
                    Phase::WaitingToReconnect => fire(&mut s, Timer::Reconnect),
                    Phase::Drained => {
                        next_seq += 1;
                        s.send(event(next_seq), now())
                    }
                },
                Input::AckInFlight(index, ok) => {
                    let sent: Vec<Value> = s
                        .pending
                        .iter()
                        .filter(|p| matches!(p.stage, Stage::Sent))
                        .map(|p| p.event.id.clone())
                        .collect();
                    match sent.get(index.index(sent.len().max(1))) {
                        Some(id) => {
                            s.receive(Message::Acknowledgement {
                                correlid: id.clone(),
                                status: if ok { 0 } else { 1 },
                                error: (!ok).then(|| ErrorBody {
                                    code: Some("E".into()),
                                    message: "no".into(),
                                }),
                            }, now())
                        }
                        None => Vec::new(),
                    }
                }
            };
            seen.see(&out)?;
            count(&mut tally, &out);
            let stats = s.stats();
            prop_assert_eq!(stats.in_flight, s.in_flight() as u64);
            prop_assert_eq!(stats.queued, s.queued() as u64);
            prop_assert!(s.in_flight() <= max_in_flight.max(1));
            check_timers(&s, &mut seen, &timing)?;
        }
        let out = s.close(false);
        seen.see(&out)?;
        count(&mut tally, &out);
        let stats = s.stats();
        prop_assert_eq!(
            (stats.reconnects, stats.acknowledged, stats.rejected, stats.failed_closed),
            (tally.reconnects, tally.acknowledged, tally.rejected, tally.failed_closed)
        );
        prop_assert_eq!((stats.queued, stats.in_flight), (0, 0));
        let durations = s.take_durations();
        prop_assert_eq!(
            durations.len() as u64,
            stats.acknowledged + stats.rejected,
            "one duration per answered event"
        );
        prop_assert!(durations.iter().all(|d| d.is_finite() && *d >= 0.0));
        prop_assert_eq!(s.poll_timeout(), None, "a timer armed after close");
        for seq in 1..=next_seq {
            prop_assert_eq!(seen.done.get(&seq).copied(), Some(1), "seq {}", seq);
        }
        prop_assert!(!seen.connected, "closed without disconnect");
        prop_assert_eq!(s.pending(), 0);
    }
}

#[test]
fn a_reconnect_asked_for_resends_what_was_in_flight_on_a_new_attempt_at_once() {
    let mut s = drained(config());
    assert_eq!(s.send(event(1), now()), [write(1)]);
    s.send(event(2), now());
    assert_eq!(
        s.reconnect_now(now()),
        [
            Output::CloseSocket,
            emit(Notice::Reconnect),
            Output::Connect
        ]
    );
    assert_eq!(s.phase(), Phase::Connecting);
    assert_eq!((s.queued(), s.in_flight()), (2, 0));
    assert_eq!(left(&s, Timer::Reconnect), None, "no wait");
    assert_eq!(s.connected(), [hello()]);
    assert_eq!(s.receive(Message::Welcome, now()), [], "no second connect");
    assert_eq!(
        s.receive(Message::Drained, now()),
        [emit(Notice::Drain), write(1)]
    );
    assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
    // Waiting to reconnect, the wait is cut short; idle, nothing happens.
    s.connection_lost(None, now());
    assert_eq!(s.phase(), Phase::WaitingToReconnect);
    assert_eq!(
        s.reconnect_now(now()),
        [emit(Notice::Reconnect), Output::Connect]
    );
    s.close(true);
    assert_eq!(s.reconnect_now(now()), []);
}

#[test]
fn the_state_follows_the_connection_and_the_oldest_event_is_the_first_not_done() {
    let mut s = session(config());
    assert_eq!(s.state(), ConnectionState::Closed);
    assert_eq!(s.oldest_pending(), None);
    s.connect(now());
    assert_eq!(s.state(), ConnectionState::Connecting);
    s.connected();
    assert_eq!(s.state(), ConnectionState::Connecting, "until WELCOME");
    s.receive(Message::Welcome, now());
    assert_eq!(s.state(), ConnectionState::Connected);
    s.receive(Message::Drained, now());
    assert_eq!(s.state(), ConnectionState::Drained);
    let first = now();
    s.send(event(1), first);
    s.send(event(2), first + ms(5));
    assert_eq!(s.oldest_pending(), Some(first));
    s.receive(ack(1), first + ms(10));
    assert_eq!(s.oldest_pending(), Some(first + ms(5)), "the first is done");
    s.connection_lost(None, first + ms(20));
    assert_eq!(s.state(), ConnectionState::Backoff);
    assert_eq!(
        s.oldest_pending(),
        Some(first + ms(5)),
        "kept across the drop"
    );
    fire(&mut s, Timer::Reconnect);
    assert_eq!(s.state(), ConnectionState::Connecting);
    s.close(false);
    assert_eq!(s.state(), ConnectionState::Closed);
    assert_eq!(s.oldest_pending(), None);
}
