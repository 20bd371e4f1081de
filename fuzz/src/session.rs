//! Target `session`: the client's sans-I/O [`Session`] driven as its driver drives it, by
//! any interleaving of user calls (connect, send, restore, ack_action, close), connection
//! news (connected, failed, lost), a virtual clock that moves on (to the session's own
//! deadline or by any amount), and frames from the server through `handle_frame`: any bytes,
//! a frame too large, a stream cut inside a frame, or well-formed messages (WELCOME, DRAINED,
//! BYE, ACTION, and acknowledgements naming events in flight or not). Besides never
//! panicking, the outputs must make sense to the driver:
//! - one connection at a time: `Connect` only with none open or opening, `Write` only on an
//!   open connection, `CloseSocket` only for one there is;
//! - timers: `handle_timeout` before the deadline `poll_timeout` gives does nothing, and no
//!   deadline is left after `close()`;
//! - every frame written reads back as a message;
//! - each send's callback (`EventDone`) at most once, in send order, only for events sent;
//!   after `close()` every one has had it; `Forget` at most once, only for stored events;
//! - `connect` and `disconnect` alternate; no more events in flight than the window.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use imt_gateway::errors::ErrorCode;
use imt_gateway::protocol::{frames_of, ErrorBody, Frame, FrameError, Message, Value};
use imt_gateway::session::{
    Notice, OutgoingEvent, Output, Session, SessionConfig, SessionError, Timing, Xorshift,
};

use super::input::Input;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Socket {
    None,
    Connecting,
    Open,
}

/// What the driver knows, built from the outputs alone.
struct Model {
    socket: Socket,
    /// Events handed to the session whose callback has not run, in send order.
    waiting: VecDeque<u64>,
    /// Outbox numbers given to restored events and not released yet.
    stored: HashSet<u64>,
    /// Ids of event frames written, for acknowledgements to name.
    written_ids: Vec<Value>,
    /// Ids of actions delivered.
    actions: Vec<Value>,
    welcomed: bool,
    window: usize,
}

fn error(code: ErrorCode, message: &str) -> SessionError {
    SessionError::new(code, message)
}

impl Model {
    /// Checks one batch of outputs; `sent` is the event just handed over, whose refusal
    /// (`EQUEUEFULL`) may come at once.
    fn see(&mut self, out: &[Output], sent: Option<u64>) -> Result<(), String> {
        for output in out {
            match output {
                Output::Connect => {
                    if self.socket != Socket::None {
                        return Err(format!("Connect with a connection {:?}", self.socket));
                    }
                    self.socket = Socket::Connecting;
                }
                Output::Write(bytes) => {
                    if self.socket != Socket::Open {
                        return Err(format!("Write with the connection {:?}", self.socket));
                    }
                    let mut read = frames_of(bytes);
                    let frame = match (read.next(), read.next()) {
                        (Some(Ok(frame)), None) => frame,
                        other => return Err(format!("wrote {bytes:02x?}: {other:?}")),
                    };
                    match Message::from_frame(&frame) {
                        Ok(Message::Event { id, .. }) => self.written_ids.push(id),
                        Ok(_) => {}
                        Err(e) => return Err(format!("wrote a frame that reads as {e}")),
                    }
                }
                Output::CloseSocket => {
                    if self.socket == Socket::None {
                        return Err("CloseSocket with no connection".into());
                    }
                    self.socket = Socket::None;
                }
                Output::Forget(number) => {
                    if !self.stored.remove(number) {
                        return Err(format!("Forget({number}) twice or never stored"));
                    }
                }
                Output::Emit(Notice::EventDone { seq, result }) => {
                    let refused = matches!(result, Err(e) if e.code == ErrorCode::QueueFull);
                    if refused && sent == Some(*seq) && self.waiting.back() == Some(seq) {
                        self.waiting.pop_back();
                    } else if self.waiting.front() == Some(seq) {
                        self.waiting.pop_front();
                    } else {
                        return Err(format!(
                            "EventDone for {seq} ({result:?}) while waiting for {:?}",
                            self.waiting.front()
                        ));
                    }
                }
                Output::Emit(Notice::Connect) => {
                    if std::mem::replace(&mut self.welcomed, true) {
                        return Err("connect twice".into());
                    }
                }
                Output::Emit(Notice::Disconnect) => {
                    if !std::mem::replace(&mut self.welcomed, false) {
                        return Err("disconnect without connect".into());
                    }
                }
                Output::Emit(Notice::Action { id, .. }) => self.actions.push(id.clone()),
                Output::Emit(_) => {}
            }
        }
        Ok(())
    }
}

fn ms(n: usize) -> Duration {
    Duration::from_millis(n as u64)
}

fn id_value(input: &mut Input, seq: u64) -> Value {
    match input.byte() % 4 {
        0 => Value::String(format!("e{}", input.byte() % 4).into()),
        1 => Value::Number(f64::from(input.byte() % 4)),
        _ => Value::Number(seq as f64),
    }
}

fn pick(input: &mut Input, from: &[Value]) -> Value {
    match from.get(input.below(from.len() + 1)) {
        Some(id) => id.clone(),
        None => Value::Number(f64::from(input.byte())),
    }
}

fn error_body(input: &mut Input) -> Option<ErrorBody> {
    match input.byte() % 3 {
        0 => None,
        1 => Some(ErrorBody {
            code: None,
            message: "no".into(),
        }),
        _ => Some(ErrorBody {
            code: Some("E1".into()),
            message: "nope".into(),
        }),
    }
}

pub fn run(data: &[u8]) -> Result<(), String> {
    let mut input = Input::new(data);
    let window = input.below(4);
    let config = SessionConfig {
        device_name: "fuzz".into(),
        auto_reconnect: input.bool(),
        max_reconnect_attempts: input.below(4) as u32,
        max_in_flight: window,
        max_queue_size: input.below(6),
        time_events: input.bool(),
    };
    let timing = Timing {
        reconnect_delay: ms(input.below(3) * 100),
        max_reconnect_delay: ms(input.below(3) * 1000),
        connect_timeout: input.bool().then(|| ms(5000)),
        ack_timeout: input.bool().then(|| ms(3000)),
    };
    let mut session = Session::new(config, timing, Xorshift::new(input.u64()));
    let mut model = Model {
        socket: Socket::None,
        waiting: VecDeque::new(),
        stored: HashSet::new(),
        written_ids: Vec::new(),
        actions: Vec::new(),
        welcomed: false,
        window: window.max(1),
    };
    let mut next_seq = 0u64;
    let mut next_stored = 0u64;
    let mut steps = 0;
    let mut now = Instant::now();
    while !input.is_empty() && steps < 4000 {
        steps += 1;
        let mut sent = None;
        let open = model.socket == Socket::Open;
        let out = match input.byte() % 17 {
            0 => session.connect(now),
            1 if model.socket == Socket::Connecting => {
                model.socket = Socket::Open;
                session.connected()
            }
            2 if model.socket == Socket::Connecting => {
                model.socket = Socket::None;
                session.connect_failed(error(ErrorCode::TimedOut, "refused"), now)
            }
            3 if open => {
                // Any frame, as the driver reads it.
                let token = input.byte() % 9;
                let n = input.below(48);
                let frame = Frame {
                    token,
                    body: Bytes::copy_from_slice(input.bytes(n)),
                };
                session.handle_frame(Ok(frame), now)
            }
            4 if open => session.receive(
                match input.byte() % 6 {
                    0 | 1 => Message::Welcome,
                    2 => Message::Drained,
                    3 => Message::Bye {
                        error: error_body(&mut input),
                    },
                    _ => Message::Action {
                        id: id_value(&mut input, 0),
                        kind: "a".into(),
                        parameters: Value::Nil,
                    },
                },
                now,
            ),
            5 | 6 if open => {
                let correlid = pick(&mut input, &model.written_ids);
                let status = [0, 1, -1, 2][input.below(4)];
                let error = if status == 0 {
                    None
                } else {
                    error_body(&mut input)
                };
                session.receive(
                    Message::Acknowledgement {
                        correlid,
                        status,
                        error,
                    },
                    now,
                )
            }
            7 if open || model.socket == Socket::Connecting => {
                model.socket = Socket::None;
                let err = input
                    .bool()
                    .then(|| error(ErrorCode::ConnectionReset, "reset"));
                session.connection_lost(err, now)
            }
            8 => match session.poll_timeout() {
                // The driver's one sleep ends: the clock is at the deadline, or past it.
                Some(deadline) if input.bool() => {
                    now = now.max(deadline) + ms(input.below(3));
                    session.handle_timeout(now)
                }
                // The clock moves on by less than the wait: nothing may fire.
                deadline => {
                    let later = now + ms(input.below(2000));
                    let early = deadline.is_none_or(|d| later < d);
                    if early {
                        now = later;
                    }
                    let out = session.handle_timeout(now);
                    if early && !out.is_empty() {
                        return Err(format!("handle_timeout before {deadline:?}, yet {out:?}"));
                    }
                    out
                }
            },
            9..=11 => {
                next_seq += 1;
                sent = Some(next_seq);
                model.waiting.push_back(next_seq);
                let id = id_value(&mut input, next_seq);
                session.send(OutgoingEvent::new(next_seq, id, "t", Value::Nil), now)
            }
            12 => {
                next_seq += 1;
                next_stored += 1;
                sent = Some(next_seq);
                model.waiting.push_back(next_seq);
                model.stored.insert(next_stored);
                let id = id_value(&mut input, next_seq);
                let mut event = OutgoingEvent::new(next_seq, id, "t", Value::Nil);
                event.stored = Some(next_stored);
                session.restore(event, now)
            }
            13 => {
                let id = pick(&mut input, &model.actions);
                session.ack_action(id, error_body(&mut input))
            }
            14 => session.close(input.bool()),
            15 if open => session.handle_frame(
                Err(FrameError::Oversize {
                    frame_len: 10 * 1024 * 1024 + 1 + input.u64() % 1024,
                }),
                now,
            ),
            16 if open => {
                // The stream ended inside a frame: the driver drops the socket it read that from.
                model.socket = Socket::None;
                session.handle_frame(
                    Err(FrameError::Truncated {
                        buffered: input.below(64),
                    }),
                    now,
                )
            }
            _ => Vec::new(),
        };
        model
            .see(&out, sent)
            .map_err(|e| format!("step {steps}: {e}"))?;
        let stats = session.stats();
        if stats.in_flight > model.window as u64 {
            return Err(format!(
                "{} in flight, window {}",
                stats.in_flight, model.window
            ));
        }
    }
    let out = session.close(false);
    model.see(&out, None).map_err(|e| format!("close: {e}"))?;
    if !model.waiting.is_empty() {
        return Err(format!(
            "close() left callbacks hanging: {:?}",
            model.waiting
        ));
    }
    let deadline = session.poll_timeout();
    if deadline.is_some() || model.socket != Socket::None || model.welcomed {
        return Err(format!(
            "after close(): deadline {deadline:?}, connection {:?}, connected {}",
            model.socket, model.welcomed
        ));
    }
    Ok(())
}
