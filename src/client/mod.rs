//! The client driver: one tokio task per client that owns everything with a clock or a socket
//! (name resolution, TCP, TLS, the reconnect delay) and feeds what happens to the protocol
//! [`Session`]. It carries out the session's [`Output`]s and hands its notices to a sink in
//! batches, one batch per burst of input, so a JavaScript host is woken once per burst and
//! never per frame. The next queued event is written the moment the previous one is
//! acknowledged, inside this task, without a round trip through the host.
//!
//! The task runs on whatever tokio runtime spawns it; the Node binding shares one runtime
//! among all clients of a process. Dropping the [`ClientHandle`] ends the task and its
//! connection.

mod transport;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep, Sleep};
use tokio_rustls::rustls::ClientConfig;
use tokio_util::codec::FramedRead;

use crate::protocol::{ErrorBody, Frame, FrameCodec, FrameError, Message, Value};
use crate::session::{Notice, OutgoingEvent, Output, Phase, Session, SessionConfig, SessionError};

pub use transport::{open, Stream};

/// How to reach the gateway and how to behave there.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// TLS (mutual, with the device certificate inside the config) or, when `None`, plain TCP
    /// (the original's rule: plain TCP exactly when the host is `'localhost'`).
    pub tls: Option<Arc<ClientConfig>>,
    pub session: SessionConfig,
    /// The wait between a dropped connection and the next attempt; the original waits 1 s.
    pub reconnect_delay: Duration,
}

impl ClientOptions {
    /// Plain TCP to `host:port` with the original's defaults.
    pub fn new(host: impl Into<String>, port: u16, device_name: impl Into<String>) -> Self {
        ClientOptions {
            host: host.into(),
            port,
            tls: None,
            session: SessionConfig::new(device_name),
            reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// What the host asks of the client.
#[derive(Debug)]
pub enum Command {
    /// The user's `connect()`; `cycle` is echoed back in [`Batch::idle`] so the host can tell
    /// an idle report that predates its latest `connect()` from a current one.
    Connect {
        cycle: u64,
    },
    Send(OutgoingEvent),
    Ack {
        id: Value,
        error: Option<ErrorBody>,
    },
    Close {
        keep_queue: bool,
    },
}

/// Notices for the host, gathered over one burst of input.
#[derive(Debug, Default)]
pub struct Batch {
    pub notices: Vec<Notice>,
    /// Set when the client has nothing left to do (no socket, no attempt, no timer) after a
    /// `connect()` with this cycle number: the host may stop keeping its process alive for it.
    pub idle: Option<u64>,
}

/// The host's side of a running client. Dropping it ends the client's task.
#[derive(Clone)]
pub struct ClientHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl ClientHandle {
    /// Queues a command; false when the task has already ended.
    pub fn command(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// Creates a client: the handle, and the task to spawn on a tokio runtime. `sink` receives
/// every batch, in order, from that task.
pub fn client<S>(options: ClientOptions, sink: S) -> (ClientHandle, impl Future<Output = ()>)
where
    S: FnMut(Batch) + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    (
        ClientHandle { commands: tx },
        Driver::new(options, sink).run(rx),
    )
}

/// Frames read in one burst before the batch goes out, so a flood cannot starve the host.
const BURST: usize = 256;

type Connecting = Pin<Box<dyn Future<Output = Result<Stream, SessionError>> + Send>>;

/// An open connection: frames in, bytes out.
struct Connection {
    reader: FramedRead<ReadHalf<Stream>, FrameCodec>,
    out: Outgoing,
}

/// The writing side. Outgoing frames are kept as the session gave them (shared `Bytes`), so a
/// large event is never copied on its way to the socket.
struct Outgoing {
    writer: WriteHalf<Stream>,
    outbox: VecDeque<Bytes>,
    /// The writer holds bytes that have not been flushed yet.
    unflushed: bool,
}

impl Connection {
    fn new(stream: Stream) -> Connection {
        let (read, write) = tokio::io::split(stream);
        Connection {
            reader: FramedRead::new(read, FrameCodec),
            out: Outgoing {
                writer: write,
                outbox: VecDeque::new(),
                unflushed: false,
            },
        }
    }

    /// Writes what is left (a BYE, an acknowledgement), then closes, within a bound so that
    /// a peer that stopped reading cannot hold the connection open.
    async fn finish(self) {
        let mut out = self.out;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while out.wants_write() {
                out.write_some().await?;
            }
            out.writer.shutdown().await
        })
        .await;
    }
}

impl Outgoing {
    fn wants_write(&self) -> bool {
        !self.outbox.is_empty() || self.unflushed
    }

    /// Writes some of the outbox, or flushes once it is empty; cancel-safe, as it is raced
    /// against reading.
    async fn write_some(&mut self) -> std::io::Result<()> {
        if let Some(front) = self.outbox.front_mut() {
            self.writer.write_buf(front).await?;
            self.unflushed = true;
            if !front.has_remaining() {
                self.outbox.pop_front();
            }
        } else {
            self.writer.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }
}

/// Waits for `future` if there is one, forever otherwise (a disabled `select!` branch).
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    reader: Option<&mut FramedRead<ReadHalf<Stream>, FrameCodec>>,
) -> Option<Result<Frame, FrameError>> {
    match reader {
        Some(reader) => reader.next().await,
        None => std::future::pending().await,
    }
}

async fn write_some(out: Option<&mut Outgoing>) -> std::io::Result<()> {
    match out {
        Some(out) => out.write_some().await,
        None => std::future::pending().await,
    }
}

/// What woke the driver up.
enum Input {
    Command(Option<Command>),
    Opened(Result<Stream, SessionError>),
    ReconnectDue,
    Frame(Option<Result<Frame, FrameError>>),
    Written(std::io::Result<()>),
}

struct Driver<S> {
    options: ClientOptions,
    session: Session,
    sink: S,
    connection: Option<Connection>,
    connecting: Option<Connecting>,
    reconnect: Option<Pin<Box<Sleep>>>,
    batch: Batch,
    cycle: u64,
    /// The last batch said idle; only a change is reported again.
    reported_idle: bool,
}

impl<S: FnMut(Batch) + Send + 'static> Driver<S> {
    fn new(options: ClientOptions, sink: S) -> Self {
        Driver {
            session: Session::new(options.session.clone()),
            options,
            sink,
            connection: None,
            connecting: None,
            reconnect: None,
            batch: Batch::default(),
            cycle: 0,
            reported_idle: true,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let input = self.next_input(&mut commands).await;
            if let Input::Command(None) = input {
                break;
            }
            self.handle(input);
            // Whatever else is ready right now joins the same batch.
            for _ in 0..BURST {
                match commands.try_recv() {
                    Ok(command) => self.handle(Input::Command(Some(command))),
                    Err(_) => break,
                }
            }
            for _ in 0..BURST {
                let Some(connection) = self.connection.as_mut() else {
                    break;
                };
                match connection.reader.next().now_or_never() {
                    Some(frame) => self.handle(Input::Frame(frame)),
                    None => break,
                }
            }
            self.deliver();
        }
        // The host is gone: nobody is left to tell, so just let the connection go.
        if let Some(connection) = self.connection.take() {
            tokio::spawn(connection.finish());
        }
    }

    async fn next_input(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Input {
        let (reader, out) = match self.connection.as_mut() {
            Some(Connection { reader, out }) => {
                (Some(reader), Some(out).filter(|o| o.wants_write()))
            }
            None => (None, None),
        };
        tokio::select! {
            command = commands.recv() => Input::Command(command),
            frame = next_frame(reader) => Input::Frame(frame),
            written = write_some(out) => Input::Written(written),
            opened = maybe(self.connecting.as_mut()) => Input::Opened(opened),
            () = maybe(self.reconnect.as_mut()) => Input::ReconnectDue,
        }
    }

    fn handle(&mut self, input: Input) {
        let outputs = match input {
            Input::Command(None) => Vec::new(),
            Input::Command(Some(command)) => match command {
                Command::Connect { cycle } => {
                    self.cycle = cycle;
                    self.reported_idle = false;
                    self.session.connect()
                }
                Command::Send(event) => self.session.send(event),
                Command::Ack { id, error } => self.session.ack_action(id, error),
                Command::Close { keep_queue } => self.session.close(keep_queue),
            },
            Input::Opened(Ok(stream)) => {
                self.connecting = None;
                self.connection = Some(Connection::new(stream));
                self.session.connected()
            }
            Input::Opened(Err(err)) => {
                self.connecting = None;
                self.session.connect_failed(err)
            }
            Input::ReconnectDue => {
                self.reconnect = None;
                self.session.reconnect_timer()
            }
            Input::Frame(Some(Ok(frame))) => match Message::from_frame(&frame) {
                Ok(message) => self.session.receive(message),
                Err(err) => self
                    .session
                    .protocol_error(SessionError::new("EPROTO", err.to_string())),
            },
            Input::Frame(Some(Err(FrameError::Oversize { .. }))) => {
                let bye = Message::Bye {
                    error: Some(ErrorBody {
                        code: Some("IM491".into()),
                        message: "Maximum buffer size exceeded.".into(),
                    }),
                };
                self.write(encode(&bye));
                self.session
                    .protocol_error(SessionError::new("IM491", "Maximum buffer size exceeded."))
            }
            Input::Frame(Some(Err(FrameError::Io(err)))) | Input::Written(Err(err)) => {
                self.connection = None;
                self.session.connection_lost(Some(transport::error(&err)))
            }
            Input::Frame(None) => {
                self.connection = None;
                self.session.connection_lost(None)
            }
            Input::Written(Ok(())) => Vec::new(),
        };
        self.apply(outputs);
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Connect => {
                    self.reconnect = None;
                    self.connecting = Some(Box::pin(open(
                        self.options.host.clone(),
                        self.options.port,
                        self.options.tls.clone(),
                    )));
                }
                Output::Write(bytes) => self.write(bytes),
                Output::CloseSocket => {
                    self.connecting = None;
                    if let Some(connection) = self.connection.take() {
                        tokio::spawn(connection.finish());
                    }
                }
                Output::ScheduleReconnect => {
                    self.reconnect = Some(Box::pin(sleep(self.options.reconnect_delay)));
                }
                Output::Emit(notice) => self.batch.notices.push(notice),
            }
        }
        if self.session.phase() == Phase::Idle {
            self.reconnect = None;
        }
    }

    fn write(&mut self, bytes: Bytes) {
        if let Some(connection) = self.connection.as_mut() {
            connection.out.outbox.push_back(bytes);
        }
    }

    fn deliver(&mut self) {
        let idle = self.session.phase() == Phase::Idle
            && self.connection.is_none()
            && self.connecting.is_none();
        if idle && !self.reported_idle {
            self.reported_idle = true;
            self.batch.idle = Some(self.cycle);
        }
        if !self.batch.notices.is_empty() || self.batch.idle.is_some() {
            (self.sink)(std::mem::take(&mut self.batch));
        }
    }
}

fn encode(message: &Message) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    message.encode(&mut buf);
    buf.freeze()
}
