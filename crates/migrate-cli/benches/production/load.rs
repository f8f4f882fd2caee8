//! The application's load: `pgbench` at a fixed rate updating random customers, and the
//! latencies its per-transaction log records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the application does, once per transaction: a write on a random row of the migrated
/// table, which takes that row's lock as the migration's batches do.
const SCRIPT: &str = "\\set id random(1, :rows)\n\
                      UPDATE customers SET email = email WHERE id = :id;\n";

/// How the load runs: pgbench's own settings.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// The `pgbench` executable.
    pub pgbench: PathBuf,
    /// Transactions per second for all clients together (`--rate`).
    pub rate: u64,
    /// Client connections (`-c`).
    pub clients: u32,
    /// pgbench worker threads (`-j`).
    pub threads: u32,
}

/// A running pgbench, logging every transaction under `dir`.
#[derive(Debug)]
pub struct Load {
    child: Child,
    dir: PathBuf,
}

/// Microseconds since the Unix epoch, the clock pgbench's log uses.
pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros() as u64
}

impl Load {
    /// Starts the load on the database at `url`, whose `customers` has ids `1..=rows`. It
    /// runs until [`Load::stop`] (pgbench's `-T` is only a cap).
    pub fn start(settings: &LoadSettings, url: &str, rows: u64, dir: &Path) -> Load {
        let script = dir.join("app.sql");
        std::fs::write(&script, SCRIPT).expect("writing the pgbench script");
        let child = Command::new(&settings.pgbench)
            .arg("--no-vacuum")
            .args(["--protocol", "prepared"])
            .arg(format!("--file={}", script.display()))
            .arg(format!("--define=rows={rows}"))
            .arg(format!("--client={}", settings.clients))
            .arg(format!("--jobs={}", settings.threads))
            .arg(format!("--rate={}", settings.rate))
            .arg("--time=3600")
            .arg("--log")
            .arg(format!("--log-prefix={}", dir.join("txn").display()))
            .arg(url)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pgbench.err")).expect("pgbench's stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", settings.pgbench.display()));
        Load {
            child,
            dir: dir.to_owned(),
        }
    }

    /// Stops pgbench and reads the transactions that ended between `from` and `to` (epoch
    /// microseconds). pgbench has no graceful stop before `-T`: it is killed, so the caller
    /// leaves a second or two after `to` for the log lines of the window to be written out.
    pub fn stop(mut self, from: u64, to: u64) -> Latencies {
        if let Ok(Some(status)) = self.child.try_wait() {
            let err = std::fs::read_to_string(self.dir.join("pgbench.err")).unwrap_or_default();
            panic!("pgbench ended early ({status}): {err}");
        }
        self.child.kill().expect("stopping pgbench");
        self.child.wait().expect("waiting for pgbench");
        let mut samples = Vec::new();
        for entry in std::fs::read_dir(&self.dir).expect("the load's directory") {
            let path = entry.expect("a directory entry").path();
            let is_log = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("txn."));
            if is_log {
                let text = std::fs::read_to_string(&path).expect("reading pgbench's log");
                samples.extend(text.lines().filter_map(parse_line).filter(|s| {
                    let end = s.end_micros;
                    (from..=to).contains(&end)
                }));
            }
        }
        Latencies::new(samples, Duration::from_micros(to.saturating_sub(from)))
    }
}

/// One transaction of pgbench's log.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From its scheduled start to its end, in microseconds (pgbench's latency under `--rate`).
    latency: u64,
    /// How late it started after its schedule, because the client was still busy.
    lag: u64,
    /// When it ended.
    end_micros: u64,
}

/// `client_id transaction_no time script_no time_epoch time_us schedule_lag`; a line cut off
/// by the kill, or a failed transaction, has no usable time and is left out.
fn parse_line(line: &str) -> Option<Sample> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 7 {
        return None;
    }
    let number = |i: usize| fields[i].parse::<u64>().ok();
    Some(Sample {
        latency: number(2)?,
        lag: number(6)?,
        end_micros: number(4)? * 1_000_000 + number(5)?,
    })
}

/// The application's latencies over a window.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Latencies from the scheduled start, in microseconds, sorted.
    total: Vec<u64>,
    /// The same less the schedule lag: the statement's own time, sorted.
    own: Vec<u64>,
    window: Duration,
}

impl Latencies {
    fn new(samples: Vec<Sample>, window: Duration) -> Latencies {
        let mut total: Vec<u64> = samples.iter().map(|s| s.latency).collect();
        let mut own: Vec<u64> = samples
            .iter()
            .map(|s| s.latency.saturating_sub(s.lag))
            .collect();
        total.sort_unstable();
        own.sort_unstable();
        Latencies { total, own, window }
    }

    /// Transactions in the window.
    pub fn count(&self) -> usize {
        self.total.len()
    }

    /// Transactions per second achieved in the window.
    pub fn rate(&self) -> f64 {
        self.count() as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The `q`-quantile of the latency from the scheduled start, in milliseconds.
    pub fn total(&self, q: f64) -> f64 {
        quantile(&self.total, q)
    }

    /// The `q`-quantile of the statement's own latency, in milliseconds.
    pub fn own(&self, q: f64) -> f64 {
        quantile(&self.own, q)
    }
}

/// Nearest-rank quantile of sorted microseconds, in milliseconds; 1.0 is the maximum.
fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}
