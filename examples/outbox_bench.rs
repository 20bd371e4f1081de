//! Appends per second of the durable outbox (`src/outbox/`) for each sync mode, with 200-byte
//! frames and 20-byte ids, acknowledging as it goes (at most 1,000 events pending, as with a
//! gateway that answers), and what one fsync costs per append on this machine.
//!
//! ```text
//! cargo run --release --example outbox_bench [DIR] [APPENDS]
//! ```
//!
//! DIR defaults to a fresh folder in the system's temporary directory (put it on the device you
//! care about: a tmpfs makes fsync free). APPENDS defaults to 20,000 (2,000 for `always`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imt_gateway::outbox::{Outbox, OutboxOptions, SyncMode};

struct Run {
    name: &'static str,
    appends: u64,
    elapsed: Duration,
    syncs: u64,
}

impl Run {
    fn micros_per_append(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.appends as f64
    }
}

fn run(base: &std::path::Path, name: &'static str, sync: SyncMode, appends: u64) -> Run {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let options = OutboxOptions {
        sync,
        ..OutboxOptions::default()
    };
    let (mut outbox, _) = Outbox::open(&dir, options).expect("open the outbox");
    let frame = vec![0xa5u8; 200];
    let start = Instant::now();
    for i in 0..appends {
        let id = format!("{i:020}");
        let seq = outbox.append(id.as_bytes(), &frame).expect("append");
        if seq > 1000 {
            outbox.ack(seq - 1000);
        }
        outbox.handle_timeout(Instant::now()).expect("sync");
    }
    outbox.sync().expect("sync");
    let elapsed = start.elapsed();
    let syncs = outbox.stats().syncs;
    drop(outbox);
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        name,
        appends,
        elapsed,
        syncs,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("imt-outbox-bench-{}", std::process::id()))
    });
    let appends: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    std::fs::create_dir_all(&base).expect("create the directory");
    println!("outbox in {}: 200-byte frames, 20-byte ids", base.display());
    let runs = [
        run(&base, "none", SyncMode::None, appends),
        run(
            &base,
            "interval-100ms",
            SyncMode::Interval(Duration::from_millis(100)),
            appends,
        ),
        run(&base, "always", SyncMode::Always, appends.min(2_000)),
    ];
    for r in &runs {
        println!(
            "{:<15} {:>7} appends in {:>7.3} s: {:>9.0} appends/s, {:>8.1} us/append, {:>5} syncs",
            r.name,
            r.appends,
            r.elapsed.as_secs_f64(),
            r.appends as f64 / r.elapsed.as_secs_f64(),
            r.micros_per_append(),
            r.syncs
        );
    }
    println!(
        "fsync cost per append (always - none): {:.1} us",
        runs[2].micros_per_append() - runs[0].micros_per_append()
    );
    let _ = std::fs::remove_dir(&base);
}
