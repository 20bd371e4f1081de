//! The durable outbox across processes: the lock against another process, a process killed
//! while appending, a file size limit and a full disk. The second process is this test binary
//! run again with `IMT_OUTBOX_CHILD` set, running only `child_process`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imt_gateway::outbox::{Outbox, OutboxOptions, Record, Seq, SyncMode};

const ROLE: &str = "IMT_OUTBOX_CHILD";
const DIR: &str = "IMT_OUTBOX_DIR";

fn id(i: u64) -> Vec<u8> {
    format!("ev-{i}").into_bytes()
}

/// A 200-byte frame that depends on `i`.
fn frame(i: u64) -> Vec<u8> {
    (0..200u64)
        .map(|k| (i.wrapping_mul(131) + k) as u8)
        .collect()
}

fn index_of(record: &Record) -> u64 {
    std::str::from_utf8(&record.id).unwrap()[3..]
        .parse()
        .unwrap()
}

fn options(sync: SyncMode) -> OutboxOptions {
    OutboxOptions {
        sync,
        max_records: 1_000_000,
        max_bytes: 1 << 30,
        segment_bytes: 64 * 1024,
    }
}

fn child(role: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .env(DIR, dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

/// Prints a line past libtest's output capture (which only catches `print!`), flushed at once.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, $($arg)*).unwrap();
        out.flush().unwrap();
    }};
}

/// Says on stderr, past libtest's output capture, that a test skips itself and why. libtest has
/// no skip decided at run time (`#[ignore]` is fixed at compile time), so such a test is still
/// listed as `ok`, with this line beside it.
#[cfg(target_os = "linux")]
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Lines the child printed with our prefixes (libtest's own lines are skipped).
fn lines(child: &mut Child) -> impl Iterator<Item = String> {
    let out = BufReader::new(child.stdout.take().unwrap());
    out.lines().map_while(Result::ok)
}

/// The second process. Does nothing in a normal test run.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    // Ends libtest's "test child_process ... " line, so that ours start lines of their own.
    say!("");
    match role.as_str() {
        "open" => match Outbox::open(&dir, options(SyncMode::None)) {
            Ok(_) => say!("RESULT opened"),
            Err(e) => say!("RESULT {}", e.code()),
        },
        "hold" => {
            let _outbox = Outbox::open(&dir, options(SyncMode::None)).unwrap();
            say!("HOLDING");
            // Until the parent closes our stdin (or kills us).
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        "crash-none" | "crash-interval" => {
            let sync = if role == "crash-none" {
                SyncMode::None
            } else {
                SyncMode::Interval(Duration::from_millis(5))
            };
            let (mut outbox, _) = Outbox::open(&dir, options(sync)).unwrap();
            let mut previous: Option<Seq> = None;
            // Bounded, in case the parent never kills us.
            for i in 0..300_000u64 {
                let seq = outbox.append(&id(i), &frame(i)).unwrap();
                say!("APPENDED {seq} {i}");
                if i % 3 == 2 {
                    let acked = previous.unwrap();
                    say!("ACKING {acked}");
                    assert!(outbox.ack(acked));
                    say!("ACKED {acked}");
                }
                previous = Some(seq);
                outbox.handle_timeout(Instant::now()).unwrap();
            }
        }
        #[cfg(unix)]
        "fsize" => {
            // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ makes a write past
            // the limit fail with EFBIG instead of killing the process.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: 50_000,
                    rlim_max: 50_000,
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
            }
            let mut options = options(SyncMode::Always);
            options.segment_bytes = 1 << 20;
            let (mut outbox, _) = Outbox::open(&dir, options.clone()).unwrap();
            let mut failed = 0;
            for i in 0.. {
                match outbox.append(&id(i), &frame(i)) {
                    Ok(seq) => say!("APPENDED {seq} {i}"),
                    Err(e) => {
                        say!("ERROR {}", e.code());
                        failed = i;
                        break;
                    }
                }
            }
            // The same record again: still refused, and the log still consistent.
            match outbox.append(&id(failed), &frame(failed)) {
                Ok(seq) => say!("APPENDED {seq} {failed}"),
                Err(e) => say!("ERROR {}", e.code()),
            }
            drop(outbox);
            let (_, recovery) = Outbox::open(&dir, options).unwrap();
            say!(
                "REOPENED {} {}",
                recovery.pending.len(),
                recovery.is_clean()
            );
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn another_process_is_refused_while_the_outbox_is_open() {
    let dir = tempfile::TempDir::new().unwrap();
    let (outbox, _) = Outbox::open(dir.path(), options(SyncMode::None)).unwrap();
    let run = |dir: &Path| {
        let out = child("open", dir).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
            .unwrap_or_else(|| panic!("no result in {text}"))
    };
    assert_eq!(run(dir.path()), "EOUTBOXLOCKED");
    drop(outbox);
    assert_eq!(run(dir.path()), "opened");
}

#[test]
fn a_killed_holder_leaves_no_stale_lock() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut holder = child("hold", dir.path()).spawn().unwrap();
    let mut out = lines(&mut holder);
    assert!(out.any(|l| l == "HOLDING"));
    let err = Outbox::open(dir.path(), options(SyncMode::None)).unwrap_err();
    assert_eq!(err.code().code(), "EOUTBOXLOCKED");
    holder.kill().unwrap();
    holder.wait().unwrap();
    Outbox::open(dir.path(), options(SyncMode::None)).unwrap();
}

/// A child appends (and acknowledges every third event) until it is killed mid-way. Reopening
/// finds every event whose append returned and whose acknowledgement had not started, in order,
/// with its id and frame, and none whose acknowledgement was followed by a returned append (the
/// write that carries the buffered tombstones).
fn killed_mid_way(role: &str) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut process = child(role, dir.path()).spawn().unwrap();
    let mut appended: Vec<(Seq, u64)> = Vec::new();
    let mut acking = std::collections::HashSet::new();
    let mut acked = std::collections::HashSet::new();
    let mut written = std::collections::HashSet::new();
    let mut out = lines(&mut process);
    let mut killed = false;
    for line in &mut out {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["APPENDED", seq, i] => {
                appended.push((seq.parse().unwrap(), i.parse().unwrap()));
                // This append wrote the tombstones of every acknowledgement before it.
                written.extend(acked.drain());
            }
            ["ACKING", seq] => {
                acking.insert(seq.parse::<Seq>().unwrap());
            }
            ["ACKED", seq] => {
                acked.insert(seq.parse::<Seq>().unwrap());
            }
            _ => {}
        }
        if !killed && appended.len() >= 4000 {
            process.kill().unwrap();
            killed = true;
            // Read on: what the child printed before it died is still in the pipe.
        }
    }
    assert!(killed, "the child ended on its own");
    process.wait().unwrap();
    assert!(appended.len() >= 4000);
    let (_, recovery) = Outbox::open(dir.path(), options(SyncMode::None)).unwrap();
    let found: Vec<Seq> = recovery.pending.iter().map(|r| r.seq).collect();
    assert!(found.windows(2).all(|w| w[0] < w[1]), "in order");
    for record in &recovery.pending {
        let i = index_of(record);
        assert_eq!(record.frame, frame(i), "frame of {i}");
        assert!(
            !written.contains(&record.seq),
            "{} was acknowledged, and its tombstone written",
            record.seq
        );
    }
    let expected: Vec<Seq> = appended
        .iter()
        .map(|&(seq, _)| seq)
        .filter(|seq| !acking.contains(seq))
        .collect();
    let mut at = found.iter().peekable();
    for seq in &expected {
        // Every expected one, in order; the others can only be events whose acknowledgement
        // was in flight or whose append had not printed yet.
        loop {
            match at.next() {
                Some(s) if s == seq => break,
                Some(s) => assert!(
                    acking.contains(s) || *s > appended.last().unwrap().0,
                    "unexpected {s}"
                ),
                None => panic!("{seq} was appended but is lost"),
            }
        }
    }
    let index: std::collections::HashMap<Seq, u64> = appended.iter().copied().collect();
    for record in &recovery.pending {
        if let Some(&i) = index.get(&record.seq) {
            assert_eq!(record.id, id(i));
        }
    }
    say!(
        "{role}: {} appended before the kill, {} acknowledged, {} pending after reopen, damage {:?}",
        appended.len(),
        written.len() + acked.len(),
        recovery.pending.len(),
        recovery.damage
    );
}

#[test]
fn killed_while_appending_with_sync_none() {
    killed_mid_way("crash-none");
}

#[test]
fn killed_while_appending_with_sync_interval() {
    killed_mid_way("crash-interval");
}

/// A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes a write fail part-way with EFBIG:
/// the partial record is cut back, and everything appended before is found again.
#[cfg(unix)]
#[test]
fn a_write_cut_by_a_file_size_limit_loses_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let out = child("fsize", dir.path()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let appended: Vec<Seq> = text
        .lines()
        .filter_map(|l| l.strip_prefix("APPENDED "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let errors: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ERROR "))
        .collect();
    assert_eq!(errors, ["EFBIG", "EFBIG"], "{text}");
    assert!(appended.len() > 100, "{text}");
    let reopened = format!("REOPENED {} true", appended.len());
    assert!(text.lines().any(|l| l == reopened), "{text}");
    let (_, recovery) = Outbox::open(dir.path(), options(SyncMode::None)).unwrap();
    assert!(recovery.is_clean());
    let found: Vec<Seq> = recovery.pending.iter().map(|r| r.seq).collect();
    assert_eq!(found, appended);
}

/// A full disk (a 256 KiB tmpfs): append fails with ENOSPC, nothing stored is lost, and
/// acknowledging events frees their segments so that appending works again. Needs root that may
/// mount (not a container without CAP_SYS_ADMIN); otherwise it says `SKIPPED` and why, and
/// returns ([`skipped`]).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_with_enospc_and_loses_nothing() {
    const NAME: &str = "a_full_disk_fails_with_enospc_and_loses_nothing";
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skipped(NAME, "needs root (to mount a tmpfs)");
        return;
    }
    let base = tempfile::TempDir::new().unwrap();
    let mount = base.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mount)
        .output()
        .unwrap();
    if !mounted.status.success() {
        let why = String::from_utf8_lossy(&mounted.stderr);
        skipped(NAME, &format!("cannot mount a tmpfs: {}", why.trim()));
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let dir = mount.join("outbox");
    let mut opts = options(SyncMode::Always);
    opts.segment_bytes = 32 * 1024;
    let (mut outbox, _) = Outbox::open(&dir, opts.clone()).unwrap();
    let mut appended = Vec::new();
    let error = loop {
        let i = appended.len() as u64;
        match outbox.append(&id(i), &frame(i)) {
            Ok(seq) => appended.push(seq),
            Err(e) => break e,
        }
        assert!(appended.len() < 10_000, "the disk never filled");
    };
    assert_eq!(error.code().code(), "ENOSPC", "{error}");
    assert!(appended.len() > 500, "{}", appended.len());
    assert_eq!(outbox.len(), appended.len());
    // Nothing lost so far.
    let pending: Vec<Seq> = outbox.pending().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(pending, appended);
    // Acknowledge the older half: their segments go, and there is room again.
    let half = appended.len() / 2;
    for &seq in &appended[..half] {
        assert!(outbox.ack(seq));
    }
    // The tombstones go out in one write; on a full disk they may not.
    let ack_failed: Vec<Seq> = match outbox.flush() {
        Ok(()) => Vec::new(),
        Err(_) => appended[..half].to_vec(),
    };
    assert!(outbox.stats().segments_deleted > 0);
    let more = outbox.append(b"ev-after", &frame(0)).unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(&dir, opts).unwrap();
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
    let found: Vec<Seq> = recovery.pending.iter().map(|r| r.seq).collect();
    let mut expected: Vec<Seq> = appended[half..].to_vec();
    expected.push(more);
    // An acknowledgement whose tombstone could not be written may come back, never a loss.
    let extra: Vec<Seq> = found
        .iter()
        .copied()
        .filter(|s| !expected.contains(s))
        .collect();
    assert!(extra.iter().all(|s| ack_failed.contains(s)), "{extra:?}");
    let kept: Vec<Seq> = found.into_iter().filter(|s| expected.contains(s)).collect();
    assert_eq!(kept, expected);
}
