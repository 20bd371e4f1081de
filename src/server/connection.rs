//! The driver of one gateway connection, from TCP accept to close, around its [`Peer`] (the
//! protocol, sans-I/O, in `peer.rs`) as `src/client/` drives the client's `Session`: it owns the
//! socket, the TLS handshake, the clock, the timer and the connection's entry in the server's
//! shared state; it reads frames and the server's commands, feeds them to the peer and carries
//! out the peer's outputs (writes, the embedder's events, held actions taken and handed back,
//! the goodbye).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::peer::{Notice, Output, Peer, PeerConfig, Phase};
use super::{Command, ConnLink, ConnectionInfo, Queued, ServerEvent, Shared, State};
use crate::protocol::{Frame, FrameError, FrameReader, Message};

/// Frames read in one go before the answers are written.
const BURST: usize = 256;

/// Most events of one connection that may wait for the embedder's verdicts (with
/// `decide_events`): beyond them the socket is not read until verdicts come.
const MAX_UNDECIDED: usize = 256;

/// Why the serving loop stops.
enum Ending {
    /// The socket is gone or to be dropped: nothing more is written.
    Drop,
    /// Write what is left (ending with BYE), shut the write side, maybe linger.
    Goodbye { linger: bool },
}

pub(super) async fn run(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let (tx, commands) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let info = {
        let mut state = shared.state();
        let mut info = None;
        let id = state.hub.register(|id| {
            let made = Arc::new(ConnectionInfo {
                id,
                remote,
                device_name: None,
                subject: None,
            });
            info = Some(made.clone());
            ConnLink {
                info: made,
                commands: tx,
                kill: kill.clone(),
            }
        });
        // Accepted just as the server closed, after close() went through the connections:
        // this one would otherwise be missed and hold close() up forever.
        match (state.closing, state.hub.entry(id)) {
            (Some(true), Some(entry)) => {
                let _ = entry.link.commands.send(Command::Kick);
            }
            (Some(false), _) => kill.cancel(),
            _ => {}
        }
        let Some(info) = info else {
            unreachable!("registered above")
        };
        info
    };
    let now = Instant::now();
    let config = PeerConfig {
        echo: shared.options.echo,
        decide_events: shared.options.decide_events,
        event_notices: shared.event_notices(),
        handshake_timeout: shared
            .options
            .tls
            .is_some()
            .then_some(shared.options.handshake_timeout),
        hello_timeout: shared.options.hello_timeout,
        idle_timeout: shared.options.idle_timeout,
        ..PeerConfig::default()
    };
    let mut conn = Conn {
        peer: Peer::new(config, now, unix_ms()),
        shared: shared.clone(),
        info,
        commands,
        kill: kill.clone(),
        out: Vec::new(),
        ending: None,
    };
    let accepted = conn.peer.accepted(now);
    conn.apply(accepted);
    match shared.tls() {
        None => conn.serve(tcp).await,
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let deadline = conn.peer.poll_timeout();
            tokio::select! {
                accepted = acceptor.accept(tcp) => match accepted {
                    Ok(stream) => {
                        let subject = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(crate::tls::certificate_subject);
                        conn.set_info(|i| i.subject = subject);
                        let secured = conn.peer.secured(Instant::now());
                        conn.apply(secured);
                        conn.serve(stream).await;
                    }
                    Err(e) => {
                        let failed = conn.peer.handshake_failed(&e.to_string());
                        conn.apply(failed);
                    }
                },
                () = expiry(deadline) => conn.expired(),
                _ = kill.cancelled() => {}
            }
        }
    }
    conn.finish();
}

struct Conn {
    peer: Peer,
    shared: Arc<Shared>,
    info: Arc<ConnectionInfo>,
    commands: mpsc::UnboundedReceiver<Command>,
    kill: CancellationToken,
    /// Messages to write at the end of this step.
    out: Vec<Message>,
    ending: Option<Ending>,
}

impl Conn {
    async fn serve<S>(&mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The client's reader: the same frame decisions (header, 10 MiB cap, truncation) on
        // both sides, and a large body in memory of its own rather than in the read buffer.
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read);
        let mut wire = BytesMut::new();
        loop {
            if self.ending.is_some() {
                break;
            }
            // What a step left to write (commands heard during the last write) goes first.
            if self.out.is_empty() {
                let room = self.room_for_events();
                let read = self.may_read();
                tokio::select! {
                    _ = self.kill.cancelled() => return,
                    frame = reader.next(), if read => {
                        self.peer.set_event_notices(self.shared.event_notices());
                        self.on_frame(frame);
                        // Frames already received are answered together, in one write: a client
                        // that pipelines events gets its acknowledgements in few TLS records.
                        for _ in 0..BURST {
                            if self.ending.is_some() || !self.may_read() {
                                break;
                            }
                            match reader.next().now_or_never() {
                                Some(frame) => self.on_frame(frame),
                                None => break,
                            }
                        }
                        // Waiting again: an idle connection keeps no read buffer (nor, unless
                        // its last frame was large, a large body's memory).
                        reader.release_idle();
                    }
                    () = self.shared.wait_for_room(), if !room => {
                        self.peer.unread_until(Instant::now());
                    }
                    command = self.commands.recv() => self.on_command(command),
                    () = expiry(self.peer.poll_timeout()) => self.expired(),
                }
                if matches!(self.ending, Some(Ending::Drop)) || self.out.is_empty() {
                    continue;
                }
            }
            // A peer that does not read holds the write up: meanwhile the server's commands
            // (a kick, close()'s goodbye) and the timer (a deadline, the goodbye's bound) are
            // still heard; what they write waits for this write.
            let write = write_all(&mut write, &mut wire, std::mem::take(&mut self.out));
            tokio::pin!(write);
            loop {
                tokio::select! {
                    r = &mut write => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                    _ = self.kill.cancelled() => return,
                    command = self.commands.recv() => self.on_command(command),
                    () = expiry(self.peer.poll_timeout()) => self.expired(),
                }
                if matches!(self.ending, Some(Ending::Drop)) {
                    return;
                }
            }
        }
        let Some(Ending::Goodbye { linger }) = self.ending else {
            return;
        };
        let goodbye = async {
            write_all(&mut write, &mut wire, std::mem::take(&mut self.out)).await?;
            write.shutdown().await?;
            if linger {
                // Until the peer's end: what it still sends is not read as frames.
                let mut scratch = [0u8; 8192];
                while reader.get_mut().read(&mut scratch).await? > 0 {}
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::select! {
            _ = goodbye => {}
            _ = self.kill.cancelled() => {}
            () = expiry(self.peer.poll_timeout()) => self.expired(),
        }
    }

    /// While the embedder is behind with the server's events, a welcomed peer's socket is not
    /// read: the peer is held back by TCP instead of its events piling up here. Before HELLO
    /// a peer can cause no event but its own HELLO or violation, and its deadline runs.
    fn room_for_events(&self) -> bool {
        self.peer.phase() == Phase::AwaitHello || self.shared.room_for_events()
    }

    /// Whether the socket is read now: not while the embedder is behind with the server's
    /// events, nor while [`MAX_UNDECIDED`] of this peer's events wait for its verdicts.
    fn may_read(&self) -> bool {
        self.room_for_events() && self.peer.awaiting_verdicts() < MAX_UNDECIDED
    }

    fn on_command(&mut self, command: Option<Command>) {
        let outputs = match command {
            Some(Command::Kick) | None => self.peer.kick(Instant::now()),
            Some(Command::Action(queued)) => self.peer.queue(queued),
            Some(Command::Verdict { number, verdict }) => {
                self.peer.verdict(number, verdict, Instant::now())
            }
        };
        self.apply(outputs);
    }

    /// A frame or a framing error goes to the peer, which decides; the end of the stream drops
    /// the socket.
    fn on_frame(&mut self, frame: Option<Result<Frame, FrameError>>) {
        let Some(frame) = frame else {
            self.ending = Some(Ending::Drop);
            return;
        };
        let outputs = self.peer.handle_frame(frame, Instant::now());
        self.apply(outputs);
    }

    /// The peer's deadline passed: it is at least its deadline, whatever the clocks' rounding.
    fn expired(&mut self) {
        let now = self
            .peer
            .poll_timeout()
            .map_or_else(Instant::now, |d| d.max(Instant::now()));
        if !self.may_read() {
            self.peer.unread_until(now);
        }
        let outputs = self.peer.handle_timeout(now);
        self.apply(outputs);
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Write(message) => self.out.push(message),
                Output::Emit(notice) => self.notify(notice),
                Output::NeedHeld => {
                    let next = self.next_held();
                    let outputs = self.peer.held(next);
                    self.apply(outputs);
                }
                Output::Shutdown { linger } => self.ending = Some(Ending::Goodbye { linger }),
                Output::Drop => self.ending = Some(Ending::Drop),
                Output::HandBack(actions) => self.hand_back(&mut self.shared.state(), actions),
            }
        }
    }

    /// The next action held for the device (the hub makes the connection live when none is
    /// left).
    fn next_held(&self) -> Option<Queued> {
        self.shared.state().hub.next_held(self.info.id)
    }

    /// Gives back actions this connection did not get acknowledged, as the hub routes them: to
    /// the device's oldest other connection past DRAINED, else to the front of its held queue.
    fn hand_back(&self, state: &mut State, actions: Vec<Queued>) {
        let device = self.info.device_name.as_deref();
        let delivery = state.hub.hand_back(self.info.id, device, actions);
        state.deliver(device, delivery);
    }

    fn notify(&mut self, notice: Notice) {
        let event = match notice {
            Notice::Connection => {
                self.shared.state().hub.announced(self.info.id);
                ServerEvent::Connection(self.info.clone())
            }
            Notice::Hello { device_name } => {
                self.set_info(|i| i.device_name = device_name.clone());
                self.shared.state().hub.hello(self.info.id, device_name);
                ServerEvent::Hello(self.info.clone())
            }
            Notice::Event {
                number,
                id,
                kind,
                bundle,
                decide,
            } => {
                let decision =
                    decide.then(|| self.shared.state().hub.decision(self.info.id, number));
                ServerEvent::Event {
                    conn: self.info.clone(),
                    id,
                    kind,
                    bundle,
                    decision,
                }
            }
            Notice::Acknowledgement {
                ticket,
                correlid,
                status,
                error,
            } => ServerEvent::Acknowledgement {
                conn: self.info.clone(),
                ticket,
                correlid,
                status,
                error,
            },
            Notice::ClientError { code, message } => ServerEvent::ClientError {
                conn: Some(self.info.clone()),
                code: code.code().into(),
                message,
            },
            Notice::Disconnect => ServerEvent::Disconnect(self.info.clone()),
        };
        self.shared.emit(event);
    }

    fn set_info(&mut self, change: impl FnOnce(&mut ConnectionInfo)) {
        let mut info = (*self.info).clone();
        change(&mut info);
        self.info = Arc::new(info);
        if let Some(link) = self.shared.state().hub.link_mut(self.info.id) {
            link.info = self.info.clone();
        }
    }

    /// Unregisters the connection; the actions it did not get acknowledged (the peer's, then
    /// any still on their way to it) are handed back (`hand_back`): to another connection of
    /// the device past DRAINED, else to the front of its held queue, in order.
    fn finish(mut self) {
        let mut notices = Vec::new();
        {
            let mut state = self.shared.state();
            state.hub.unregister(self.info.id);
            self.commands.close();
            let mut back = Vec::new();
            for output in self.peer.closed() {
                match output {
                    Output::HandBack(actions) => back.extend(actions),
                    Output::Emit(notice) => notices.push(notice),
                    _ => {}
                }
            }
            while let Ok(command) = self.commands.try_recv() {
                if let Command::Action(queued) = command {
                    back.extend(queued.ticket.is_some().then_some(queued));
                }
            }
            self.hand_back(&mut state, back);
        }
        for notice in notices {
            self.notify(notice);
        }
    }
}

/// Writes `messages` in one write (through `wire`, a buffer kept between writes, empty after
/// each).
async fn write_all<W: AsyncWrite + Unpin>(
    write: &mut W,
    wire: &mut BytesMut,
    messages: Vec<Message>,
) -> std::io::Result<()> {
    wire.clear();
    for message in messages {
        message.encode(wire);
    }
    write.write_all(wire).await?;
    wire.clear();
    crate::protocol::shrink_after_large_frame(wire);
    write.flush().await
}

/// Resolves when the timer expires; never without one.
async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}
