//! The benchmark's floor: a bare Rust stop-and-wait gateway client with no Node, no session
//! machinery and no batching, straight over tokio-rustls and the frame codec. `npm run bench`
//! runs it against the same Server as the Node Client and reports each Client figure as a
//! ratio to this one. Prints one JSON object.
//!
//! ```text
//! floor <events|actions|connect|idle|load> --port P [--host H] --key F --cert F --ca F
//!       [--count N] [--size BYTES] [--text ascii|wide] [--device NAME] [--clients K]
//!       [--warmup N]
//! floor gateway --key F --cert F --ca F [--host H] [--port P]
//! ```
//!
//! `gateway` is the lean gateway: the crate's own `Server` (mutual TLS, no echo, no event
//! notices) on a one-thread tokio runtime in a process of its own, with no Node in it, so that
//! a pinned run spends as little of its CPU as possible outside the client under test. It
//! prints `{"port":P}`, then reads commands on stdin, one a line:
//! `queue DEVICE COUNT SIZE [ascii|wide]` holds COUNT actions for DEVICE (as bench/server.js
//! does) and prints `{"queued":COUNT}`; the end of stdin ends the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use imt_gateway::protocol::{Frame, FrameCodec, FrameReader, Message, Value};
use imt_gateway::server::{OutboundAction, Server, ServerOptions};
use imt_gateway::tls;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_util::codec::Encoder;

/// The connection: frames read by the package's own reader, written through it to the stream.
type Peer = FrameReader<TlsStream<TcpStream>>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    mode: String,
    host: String,
    port: u16,
    config: Arc<ClientConfig>,
    count: usize,
    size: usize,
    device: String,
    clients: usize,
    /// Events sent before the timed ones (`events` mode).
    warmup: usize,
    /// Events carry their `size` bytes as a string rather than a binary: `ascii` one byte a
    /// character, `wide` two (U+0436), as bench/client.js sends them.
    text: Option<String>,
}

fn args() -> Result<Args, Failure> {
    let mut raw = std::env::args().skip(1);
    let mode = raw.next().ok_or("mode expected")?;
    let mut named = HashMap::new();
    while let Some(key) = raw.next() {
        let value = raw.next().ok_or(format!("{key} needs a value"))?;
        named.insert(key.trim_start_matches("--").to_owned(), value);
    }
    let get = |k: &str| named.get(k).cloned().ok_or(format!("--{k} expected"));
    let read = |k: &str| -> Result<Vec<u8>, Failure> { Ok(std::fs::read(get(k)?)?) };
    let config = tls::client_config(&read("key")?, &read("cert")?, Some(&[read("ca")?]))?;
    let number = |k: &str, default: usize| -> Result<usize, Failure> {
        Ok(match named.get(k) {
            Some(v) => v.parse()?,
            None => default,
        })
    };
    Ok(Args {
        mode,
        host: named
            .get("host")
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: get("port")?.parse()?,
        config,
        count: number("count", 1000)?,
        size: number("size", 0)?,
        device: named
            .get("device")
            .cloned()
            .unwrap_or_else(|| "floor".into()),
        clients: number("clients", 1)?,
        warmup: number("warmup", 0)?,
        text: named.get("text").cloned(),
    })
}

/// Writes one frame and flushes it, as a `Framed` sink's `send` does.
async fn send(peer: &mut Peer, frame: Frame) -> Result<(), Failure> {
    let mut wire = BytesMut::new();
    FrameCodec.encode(frame, &mut wire)?;
    let stream = peer.get_mut();
    stream.write_all(&wire).await?;
    stream.flush().await?;
    Ok(())
}

async fn next(peer: &mut Peer) -> Result<Message, Failure> {
    let frame: Frame = peer.next().await.ok_or("connection closed")??;
    Ok(Message::from_frame(&frame)?)
}

/// TCP + TLS + HELLO, then every held action acknowledged up to DRAINED. Returns the peer and
/// how many actions it acknowledged on the way.
async fn connect(args: &Args, device: &str) -> Result<(Peer, usize), Failure> {
    let tcp = TcpStream::connect((args.host.as_str(), args.port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(args.host.clone())?;
    let stream = TlsConnector::from(args.config.clone())
        .connect(name, tcp)
        .await?;
    let mut peer = FrameReader::new(stream);
    send(&mut peer, Message::hello(device).to_frame()).await?;
    let mut actions = 0;
    loop {
        match next(&mut peer).await? {
            Message::Welcome => {}
            Message::Drained => return Ok((peer, actions)),
            Message::Action { id, .. } => {
                actions += 1;
                ack(&mut peer, id).await?;
            }
            other => return Err(format!("unexpected {:?}", other.token()).into()),
        }
    }
}

async fn ack(peer: &mut Peer, id: Value) -> Result<(), Failure> {
    let ack = Message::Acknowledgement {
        correlid: id,
        status: 0,
        error: None,
    };
    send(peer, ack.to_frame()).await?;
    Ok(())
}

fn bundle(size: usize, n: usize, text: Option<&str>) -> Value {
    if let Some(text) = text {
        let data = match text {
            "ascii" => "x".repeat(size),
            _ => "\u{436}".repeat(size / 2),
        };
        Value::Map(vec![("data".into(), Value::String(data.into()))])
    } else if size == 0 {
        Value::Map(vec![("n".into(), Value::Number(n as f64))])
    } else {
        Value::Map(vec![(
            "data".into(),
            Value::Binary(bytes::Bytes::from(vec![7u8; size])),
        )])
    }
}

/// Sends `count` events one at a time; returns each round trip.
async fn send_events(
    peer: &mut Peer,
    count: usize,
    size: usize,
    text: Option<&str>,
) -> Result<Vec<Duration>, Failure> {
    let mut rtts = Vec::with_capacity(count);
    for n in 0..count {
        let id = Value::String(format!("{n:032x}").into());
        let frame = Message::Event {
            id: id.clone(),
            kind: "bench".into(),
            bundle: bundle(size, n, text),
        }
        .to_frame();
        let sent = Instant::now();
        send(peer, frame).await?;
        loop {
            match next(peer).await? {
                Message::Acknowledgement { correlid, .. } if correlid == id => break,
                Message::Action { id, .. } => ack(peer, id).await?,
                other => return Err(format!("unexpected {:?}", other.token()).into()),
            }
        }
        rtts.push(sent.elapsed());
    }
    Ok(rtts)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    micros(sorted[index])
}

/// CPU time this process has used so far, every thread's, in nanoseconds (Linux's
/// `/proc/self/task/*/schedstat`; 0 where there is none).
fn cpu_nanos() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Microseconds of CPU per message between two [`cpu_nanos`] readings.
fn cpu_us_per(before: u64, after: u64, messages: usize) -> f64 {
    after.saturating_sub(before) as f64 / 1e3 / messages.max(1) as f64
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

async fn run(args: Args) -> Result<String, Failure> {
    match args.mode.as_str() {
        "events" => {
            let (mut peer, _) = connect(&args, &args.device).await?;
            // Untimed first, as bench/client.js does with `warmup`.
            send_events(&mut peer, args.warmup, args.size, args.text.as_deref()).await?;
            let cpu = cpu_nanos();
            let started = Instant::now();
            let mut rtts =
                send_events(&mut peer, args.count, args.size, args.text.as_deref()).await?;
            let seconds = started.elapsed().as_secs_f64();
            let cpu_us = cpu_us_per(cpu, cpu_nanos(), args.count);
            rtts.sort();
            Ok(format!(
                "{{\"perSecond\":{:.1},\"mbPerSecond\":{:.1},\"rttMedianUs\":{:.1},\"rttP99Us\":{:.1},\"cpuUs\":{:.2}}}",
                args.count as f64 / seconds,
                (args.count * args.size) as f64 / seconds / 1e6,
                percentile(&rtts, 0.5),
                percentile(&rtts, 0.99),
                cpu_us
            ))
        }
        "actions" => {
            // With `--warmup`: untimed first, as bench/client.js does, a connection as
            // DEVICE-warmup, for which the server holds `warmup` actions.
            if args.warmup > 0 {
                let (_peer, actions) = connect(&args, &format!("{}-warmup", args.device)).await?;
                if actions != args.warmup {
                    return Err(
                        format!("expected {} warm-up actions, got {actions}", args.warmup).into(),
                    );
                }
            }
            // The server holds `count` actions for this device: they arrive before DRAINED.
            let cpu = cpu_nanos();
            let started = Instant::now();
            let (_peer, actions) = connect(&args, &args.device).await?;
            let seconds = started.elapsed().as_secs_f64();
            let cpu_us = cpu_us_per(cpu, cpu_nanos(), actions);
            if actions != args.count {
                return Err(format!("expected {} actions, got {actions}", args.count).into());
            }
            Ok(format!(
                "{{\"perSecond\":{:.1},\"mbPerSecond\":{:.1},\"cpuUs\":{:.2}}}",
                actions as f64 / seconds,
                (actions * args.size) as f64 / seconds / 1e6,
                cpu_us
            ))
        }
        "connect" => {
            let mut times = Vec::with_capacity(args.count);
            for _ in 0..args.count {
                let started = Instant::now();
                let (peer, _) = connect(&args, &args.device).await?;
                times.push(started.elapsed());
                drop(peer);
            }
            times.sort();
            Ok(format!("{{\"medianUs\":{:.1}}}", percentile(&times, 0.5)))
        }
        "idle" => {
            let before = resident_bytes();
            let mut peers = Vec::with_capacity(args.clients);
            for _ in 0..args.clients {
                peers.push(connect(&args, &args.device).await?.0);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = resident_bytes();
            Ok(format!(
                "{{\"bytesPerClient\":{:.0}}}",
                after.saturating_sub(before) as f64 / args.clients as f64
            ))
        }
        "load" => {
            let args = Arc::new(args);
            let mut peers = Vec::with_capacity(args.clients);
            for i in 0..args.clients {
                peers.push(connect(&args, &format!("{}-{i}", args.device)).await?.0);
            }
            let started = Instant::now();
            let tasks: Vec<_> = peers
                .into_iter()
                .map(|mut peer| {
                    let args = args.clone();
                    tokio::spawn(async move {
                        send_events(&mut peer, args.count, args.size, args.text.as_deref())
                            .await
                            .map(|_| ())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            let seconds = started.elapsed().as_secs_f64();
            Ok(format!(
                "{{\"perSecond\":{:.1}}}",
                (args.count * args.clients) as f64 / seconds
            ))
        }
        other => Err(format!("unknown mode {other}").into()),
    }
}

/// The lean gateway (see the module documentation).
fn gateway() -> Result<(), Failure> {
    let mut raw = std::env::args().skip(2);
    let mut named = HashMap::new();
    while let Some(key) = raw.next() {
        let value = raw.next().ok_or(format!("{key} needs a value"))?;
        named.insert(key.trim_start_matches("--").to_owned(), value);
    }
    let read = |k: &str| -> Result<Vec<u8>, Failure> {
        Ok(std::fs::read(
            named.get(k).ok_or(format!("--{k} expected"))?,
        )?)
    };
    let tls = tls::server_config(&read("key")?, &read("cert")?, Some(&[read("ca")?]))?;
    let host = named
        .get("host")
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = named.get("port").map_or(Ok(0), |p| p.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let options = ServerOptions {
        tls: Some(tls),
        echo: false,
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::new(options, events));
    server.set_event_notices(false);
    let address = runtime.block_on(server.listen(Some(&host), port))?;
    println!("{{\"port\":{}}}", address.port());
    let queue = server.clone();
    // Commands from stdin on a thread of their own: the runtime's one thread only serves.
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["queue", device, count, size, ref rest @ ..] = words[..] {
                let (Ok(count), Ok(size)) = (count.parse::<usize>(), size.parse::<usize>()) else {
                    eprintln!("floor gateway: bad command {line:?}");
                    continue;
                };
                let text = rest.first().copied();
                for n in 0..count {
                    queue.queue_action(
                        device,
                        OutboundAction {
                            id: Value::String(format!("a{n}").into()),
                            kind: "bench".into(),
                            // As bench/server.js makes them.
                            parameters: bundle(size, n, text),
                        },
                    );
                }
                println!("{{\"queued\":{count}}}");
            } else {
                eprintln!("floor gateway: unknown command {line:?}");
            }
        }
        std::process::exit(0);
    });
    // What the server reports (connections, acknowledgements of held actions) is dropped.
    runtime.block_on(async move { while reports.recv().await.is_some() {} });
    Ok(())
}

/// A lean HTTP `CONNECT` proxy for the `connect via HTTP proxy` row: reads a request's head,
/// connects to its target, answers `200` and relays both ways, on one thread, as a proxy in
/// C or Rust would; prints `{"port":N}` once listening.
fn proxy() -> Result<(), Failure> {
    use tokio::io::AsyncReadExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{{\"port\":{}}}", listener.local_addr()?.port());
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut head = Vec::with_capacity(256);
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut byte).await.ok() != Some(1) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = upstream.set_nodelay(true);
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    })
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("proxy") {
        if let Err(err) = proxy() {
            eprintln!("floor: {err}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("gateway") {
        if let Err(err) = gateway() {
            eprintln!("floor: {err}");
            std::process::exit(1);
        }
        return;
    }
    let result = args().and_then(|args| {
        // One thread, as a lean client has: pinned to one CPU, a multi-thread runtime would add
        // a wake-up of another worker thread (and its context switches) to every exchange.
        // `load`'s tasks run on this thread too, taking turns.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(args))
    });
    match result {
        Ok(json) => println!("{json}"),
        Err(err) => {
            eprintln!("floor: {err}");
            std::process::exit(1);
        }
    }
}
