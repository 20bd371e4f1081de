//! One peer of the gateway server, from TCP accept to close: the TLS handshake, HELLO →
//! WELCOME, held actions one at a time, DRAINED, then events acknowledged (and echoed) and live
//! actions. Anything the protocol does not allow is answered with BYE and the connection ends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::errors::ErrorCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{
    Command, ConnEntry, ConnectionInfo, OutboundAction, Queued, ServerEvent, Shared, Verdict,
};
use crate::protocol::{ErrorBody, Frame, FrameCodec, FrameError, Message, Value};

/// Frames read in one go before the answers are written.
const BURST: usize = 256;

/// How a connection ends: whether a BYE goes out (with which error), and whether the reason
/// is reported as a `ClientError` (a protocol violation rather than a goodbye).
struct End {
    say_bye: bool,
    bye: Option<ErrorBody>,
    report: bool,
}

impl End {
    /// The peer left, the socket failed, or the server is being destroyed: nothing to say.
    fn silent() -> End {
        End {
            say_bye: false,
            bye: None,
            report: false,
        }
    }

    /// `kick()` and graceful close: BYE with no body.
    fn kick() -> End {
        End {
            say_bye: true,
            bye: None,
            report: false,
        }
    }

    fn violation(code: ErrorCode, message: impl Into<String>) -> End {
        End {
            say_bye: true,
            bye: Some(ErrorBody {
                code: Some(code.code().to_owned()),
                message: message.into(),
            }),
            report: true,
        }
    }
}

#[derive(PartialEq)]
enum Phase {
    AwaitHello,
    Holding,
    Live,
}

enum Decision {
    Waiting(oneshot::Receiver<Verdict>),
    Decided(Verdict),
}

struct PendingEvent {
    id: Value,
    /// Type and bundle for the echo, when the server echoes.
    echo: Option<(String, Value)>,
    verdict: Decision,
}

pub(super) async fn run(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let (tx, mut commands) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let id = {
        let mut state = shared.state();
        let id = state.next_id();
        let info = Arc::new(ConnectionInfo {
            id,
            remote,
            device_name: None,
            subject: None,
        });
        state.conns.insert(
            id,
            ConnEntry {
                info,
                commands: tx,
                live: false,
                announced: false,
                kill: kill.clone(),
            },
        );
        // Accepted just as the server closed, after close() went through the connections:
        // this one would otherwise be missed and hold close() up forever.
        match state.closing {
            Some(true) => {
                let _ = state.conns[&id].commands.send(Command::Kick);
            }
            Some(false) => kill.cancel(),
            None => {}
        }
        id
    };
    let mut conn = Conn {
        shared: shared.clone(),
        info: Arc::new(ConnectionInfo {
            id,
            remote,
            device_name: None,
            subject: None,
        }),
        phase: Phase::AwaitHello,
        announced: false,
        in_flight: None,
        outgoing: VecDeque::new(),
        pending: VecDeque::new(),
        out: Vec::new(),
        kill: kill.clone(),
    };
    match shared.options.tls.clone() {
        None => {
            conn.announce();
            conn.serve(tcp, &mut commands).await;
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake =
                tokio::time::timeout(shared.options.handshake_timeout, acceptor.accept(tcp));
            let outcome = tokio::select! {
                r = handshake => Some(r),
                _ = kill.cancelled() => None,
            };
            match outcome {
                Some(Ok(Ok(stream))) => {
                    let subject = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::certificate_subject);
                    conn.set_info(|i| i.subject = subject);
                    conn.announce();
                    conn.serve(stream, &mut commands).await;
                }
                Some(Ok(Err(e))) => shared.emit(ServerEvent::ClientError {
                    conn: Some(conn.info.clone()),
                    code: ErrorCode::Tls.code().into(),
                    message: format!("TLS handshake failed: {e}"),
                }),
                Some(Err(_)) => shared.emit(ServerEvent::ClientError {
                    conn: Some(conn.info.clone()),
                    code: ErrorCode::TimedOut.code().into(),
                    message: "TLS handshake timed out.".into(),
                }),
                None => {}
            }
        }
    }
    conn.finish(&mut commands);
}

struct Conn {
    shared: Arc<Shared>,
    info: Arc<ConnectionInfo>,
    phase: Phase,
    announced: bool,
    /// The action sent and not yet acknowledged (one at a time).
    in_flight: Option<Queued>,
    /// Live actions and echoes waiting for `in_flight` to clear.
    outgoing: VecDeque<Queued>,
    /// Events waiting for their verdict, acknowledged in arrival order.
    pending: VecDeque<PendingEvent>,
    /// Messages to write at the end of this step.
    out: Vec<Message>,
    kill: CancellationToken,
}

impl Conn {
    fn set_info(&mut self, change: impl FnOnce(&mut ConnectionInfo)) {
        let mut info = (*self.info).clone();
        change(&mut info);
        self.info = Arc::new(info);
        if let Some(entry) = self.shared.state().conns.get_mut(&self.info.id) {
            entry.info = self.info.clone();
        }
    }

    fn announce(&mut self) {
        self.announced = true;
        if let Some(entry) = self.shared.state().conns.get_mut(&self.info.id) {
            entry.announced = true;
        }
        self.shared.emit(ServerEvent::Connection(self.info.clone()));
    }

    async fn serve<S>(&mut self, stream: S, commands: &mut mpsc::UnboundedReceiver<Command>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framed = Framed::new(stream, FrameCodec);
        let end = self.serve_frames(&mut framed, commands).await;
        if let (true, Some(bye)) = (end.report, &end.bye) {
            self.shared.emit(ServerEvent::ClientError {
                conn: Some(self.info.clone()),
                code: bye.code.clone().unwrap_or_default(),
                message: bye.message.clone(),
            });
        }
        if !end.say_bye {
            return;
        }
        let linger = end.report;
        let goodbye = async {
            framed.send(Message::Bye { error: end.bye }).await?;
            let stream = framed.get_mut();
            stream.shutdown().await?;
            // Lingering close: closing with unread input would reset the connection and could
            // destroy the BYE before the peer reads it, so read and discard until the peer
            // closes too (bounded by the timeout below, which leaves a slow peer time to finish
            // writing a 10 MiB frame: 2 s was too short for a client under qemu-user).
            if linger {
                let mut scratch = [0u8; 8192];
                while stream.read(&mut scratch).await? > 0 {}
            }
            Ok::<_, FrameError>(())
        };
        let kill = self.kill.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                _ = goodbye => {},
                _ = kill.cancelled() => {},
            }
        })
        .await;
    }

    async fn serve_frames<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let step = tokio::select! {
                _ = self.kill.cancelled() => Err(End::silent()),
                frame = framed.next() => {
                    crate::protocol::shrink_after_large_frame(framed.read_buffer_mut());
                    let mut step = self.on_frame(frame);
                    // Frames already received are answered together, in one write: a client
                    // that pipelines events gets its acknowledgements in few TLS records.
                    for _ in 0..BURST {
                        if step.is_err() {
                            break;
                        }
                        match framed.next().now_or_never() {
                            Some(frame) => step = self.on_frame(frame),
                            None => break,
                        }
                    }
                    step
                }
                command = commands.recv() => match command {
                    Some(Command::Kick) | None => Err(End::kick()),
                    Some(Command::Action(queued)) => {
                        self.outgoing.push_back(queued);
                        Ok(())
                    }
                },
                verdict = next_verdict(&mut self.pending), if self.waiting_for_verdict() => {
                    if let Some(front) = self.pending.front_mut() {
                        front.verdict = Decision::Decided(verdict);
                    }
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
            self.settle();
            if self.out.is_empty() {
                continue;
            }
            let kill = self.kill.clone();
            let out = std::mem::take(&mut self.out);
            let write = async {
                for message in out {
                    framed.feed(message).await?;
                }
                SinkExt::<Message>::flush(framed).await
            };
            let written = tokio::select! {
                r = write => r.is_ok(),
                _ = kill.cancelled() => false,
            };
            if !written {
                return End::silent();
            }
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Frame, FrameError>>) -> Result<(), End> {
        match frame {
            None | Some(Err(FrameError::Io(_) | FrameError::Truncated { .. })) => {
                Err(End::silent())
            }
            Some(Ok(frame)) => match Message::from_frame(&frame) {
                Ok(message) => self.on_message(message),
                Err(e) => Err(End::violation(ErrorCode::Proto, e.to_string())),
            },
            Some(Err(FrameError::Oversize { .. })) => Err(End::violation(
                ErrorCode::BufferExceeded,
                "Maximum buffer size exceeded.",
            )),
        }
    }

    fn waiting_for_verdict(&self) -> bool {
        matches!(
            self.pending.front().map(|p| &p.verdict),
            Some(Decision::Waiting(_))
        )
    }

    fn on_message(&mut self, message: Message) -> Result<(), End> {
        match (message, &self.phase) {
            (hello @ Message::Hello { .. }, Phase::AwaitHello) => {
                let name = hello.device_name().map(str::to_owned);
                self.set_info(|i| i.device_name = name);
                self.shared.emit(ServerEvent::Hello(self.info.clone()));
                self.out.push(Message::Welcome);
                self.phase = Phase::Holding;
                Ok(())
            }
            (Message::Hello { .. }, _) => {
                Err(End::violation(ErrorCode::Proto, "Unexpected HELLO."))
            }
            (Message::Bye { .. }, _) => Err(End::silent()),
            (_, Phase::AwaitHello) => Err(End::violation(ErrorCode::Proto, "HELLO expected.")),
            (Message::Event { .. }, Phase::Holding) => Err(End::violation(
                ErrorCode::Proto,
                "Event received before DRAINED.",
            )),
            (Message::Event { id, kind, bundle }, _) => {
                let (decision, verdict) = if self.shared.options.decide_events {
                    let (tx, rx) = oneshot::channel();
                    let mut state = self.shared.state();
                    let decision = state.next_id();
                    state.decisions.insert(decision, tx);
                    (Some(decision), Decision::Waiting(rx))
                } else {
                    (None, Decision::Decided(Verdict::Accept))
                };
                // The bundle is copied only when both the embedder and the echo want it.
                let (notice, echo) = match (self.shared.wants_events(), self.shared.options.echo) {
                    (true, true) => (Some((kind.clone(), bundle.clone())), Some((kind, bundle))),
                    (true, false) => (Some((kind, bundle)), None),
                    (false, true) => (None, Some((kind, bundle))),
                    (false, false) => (None, None),
                };
                if let Some((kind, bundle)) = notice {
                    self.shared.emit(ServerEvent::Event {
                        conn: self.info.clone(),
                        id: id.clone(),
                        kind,
                        bundle,
                        decision,
                    });
                }
                self.pending.push_back(PendingEvent { id, echo, verdict });
                Ok(())
            }
            (
                Message::Acknowledgement {
                    correlid,
                    status,
                    error,
                },
                _,
            ) => match self.in_flight.take() {
                None => Err(End::violation(
                    ErrorCode::Proto,
                    "Received acknowledgement even if there is no action in flight.",
                )),
                Some(q) if q.action.id != correlid => {
                    self.in_flight = Some(q);
                    Err(End::violation(
                        ErrorCode::Proto,
                        "Received acknowledgement for different action.",
                    ))
                }
                Some(q) => {
                    self.shared.emit(ServerEvent::Acknowledgement {
                        conn: self.info.clone(),
                        ticket: q.ticket,
                        correlid,
                        status,
                        error,
                    });
                    Ok(())
                }
            },
            (other, _) => Err(End::violation(
                ErrorCode::Proto,
                format!("Unexpected {:?} from a client.", other.token()),
            )),
        }
    }

    /// Acknowledges every decided event at the head of the queue, then sends the next action
    /// (a held one before DRAINED, a live one or an echo after it) if none is in flight.
    fn settle(&mut self) {
        while let Some(Decision::Decided(_)) = self.pending.front().map(|p| &p.verdict) {
            let Some(event) = self.pending.pop_front() else {
                break;
            };
            let Decision::Decided(verdict) = event.verdict else {
                break;
            };
            match verdict {
                Verdict::Accept => {
                    self.out.push(Message::Acknowledgement {
                        correlid: event.id,
                        status: 0,
                        error: None,
                    });
                    if let Some((kind, parameters)) = event.echo {
                        self.outgoing.push_back(Queued {
                            action: OutboundAction {
                                id: Value::Number(now_ms()),
                                kind,
                                parameters,
                            },
                            ticket: None,
                        });
                    }
                }
                Verdict::Reject(error) => self.out.push(Message::Acknowledgement {
                    correlid: event.id,
                    status: 1,
                    error: Some(error),
                }),
            }
        }
        if self.in_flight.is_some() {
            return;
        }
        if self.phase == Phase::Holding {
            let shared = self.shared.clone();
            let mut state = shared.state();
            let device = self.info.device_name.clone().unwrap_or_default();
            match state.held.get_mut(&device).and_then(VecDeque::pop_front) {
                Some(queued) => {
                    self.send_action(queued);
                    return;
                }
                None => {
                    if let Some(entry) = state.conns.get_mut(&self.info.id) {
                        entry.live = true;
                    }
                    self.out.push(Message::Drained);
                    self.phase = Phase::Live;
                }
            }
        }
        if self.phase == Phase::Live {
            if let Some(queued) = self.outgoing.pop_front() {
                self.send_action(queued);
            }
        }
    }

    fn send_action(&mut self, queued: Queued) {
        self.out.push(Message::Action {
            id: queued.action.id.clone(),
            kind: queued.action.kind.clone(),
            parameters: queued.action.parameters.clone(),
        });
        self.in_flight = Some(queued);
    }

    /// Unregisters the connection; actions it did not get acknowledged go back to the front of
    /// the device's held queue, in order, for its next connection.
    fn finish(mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        {
            let mut state = self.shared.state();
            state.conns.remove(&self.info.id);
            commands.close();
            while let Ok(command) = commands.try_recv() {
                if let Command::Action(queued) = command {
                    self.outgoing.push_back(queued);
                }
            }
            let unacked: Vec<Queued> = self
                .in_flight
                .take()
                .into_iter()
                .chain(self.outgoing.drain(..))
                .filter(|q| q.ticket.is_some())
                .collect();
            if !unacked.is_empty() {
                let device = self.info.device_name.clone().unwrap_or_default();
                let held = state.held.entry(device).or_default();
                for queued in unacked.into_iter().rev() {
                    held.push_front(queued);
                }
            }
        }
        if self.announced {
            self.shared.emit(ServerEvent::Disconnect(self.info.clone()));
        }
    }
}

/// The verdict for the oldest event; a dropped decision (server closing) counts as accepted.
async fn next_verdict(pending: &mut VecDeque<PendingEvent>) -> Verdict {
    match pending.front_mut().map(|p| &mut p.verdict) {
        Some(Decision::Waiting(rx)) => rx.await.unwrap_or(Verdict::Accept),
        _ => std::future::pending().await,
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}
