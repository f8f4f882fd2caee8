//! `/metrics` for Prometheus while a run lasts (`--metrics-addr`, `status-board.metrics-addr`).
//!
//! The engine records its metrics through the `metrics` facade; this installs
//! `metrics-exporter-prometheus`'s recorder and serves what its handle renders, over a small
//! HTTP/1.1 responder of our own: one `GET` per connection, the connection closed after the
//! answer. That is all a Prometheus scrape needs, and it keeps hyper and a TLS stack out of the
//! binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use migrate_core::run_metrics::BATCH_DURATION_SECONDS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit::CliError;

/// Buckets of the batch duration histogram, in seconds: from a few milliseconds (a small batch
/// on an idle SQLite file) to half a minute (a batch waiting on locks), so that
/// `histogram_quantile` gives a usable p50 and p99 anywhere in that range.
const BATCH_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The most bytes read of a request: a scrape's request line and headers fit many times over.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request before the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the recorder's histograms are drained between scrapes, so that memory stays flat
/// however long nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The server, from before the run until [`finish`](MetricsServer::finish).
#[derive(Debug)]
pub struct MetricsServer {
    /// Stops the accept loop.
    stop: CancellationToken,
    /// What the responders share with the linger after the run.
    after: Arc<AfterRun>,
    task: JoinHandle<()>,
}

/// How the linger after the run learns of the scrape it waits for.
#[derive(Debug, Default)]
struct AfterRun {
    /// Set when the run is over: a scrape rendered from then on reads the final counts.
    over: AtomicBool,
    /// Notified (a permit kept when nobody waits yet) when such a scrape was served.
    scraped: Notify,
}

/// Listens on `addr` (named `by`: the option or key that gave it, for errors) and installs the
/// Prometheus recorder. An address that cannot be listened on is a usage error: nothing has
/// run yet.
pub fn start(addr: &str, by: &str) -> Result<MetricsServer, CliError> {
    let cannot = |e: std::io::Error| CliError::Usage(format!("{by} {addr}: cannot listen: {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    let listener = TcpListener::from_std(listener).map_err(cannot)?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(BATCH_DURATION_SECONDS.to_owned()),
            &BATCH_DURATION_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError::Fatal(format!("while installing the metrics recorder: {e}")))?;
    let stop = CancellationToken::new();
    let after = Arc::new(AfterRun::default());
    let task = tokio::spawn(serve(listener, handle, stop.clone(), Arc::clone(&after)));
    Ok(MetricsServer { stop, after, task })
}

impl MetricsServer {
    /// The run is over: from now on a scrape reads the final counts.
    pub fn run_over(&self) {
        self.after.over.store(true, Ordering::SeqCst);
    }

    /// Keeps serving for at most `linger` after the run, until a scrape since
    /// [`run_over`](Self::run_over) is served (it read the final counts) or Ctrl-C, then stops.
    pub async fn finish(self, linger: Duration) {
        if !linger.is_zero() {
            self.run_over();
            tokio::select! {
                () = self.after.scraped.notified() => {}
                () = tokio::time::sleep(linger) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Accepts connections until `stop`, each answered on a task of its own.
async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    stop: CancellationToken,
    after: Arc<AfterRun>,
) {
    let mut upkeep = tokio::time::interval(UPKEEP_PERIOD);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => {
                // A failed accept (too many open files) concerns that client only.
                if let Ok((stream, _)) = accepted {
                    let (handle, after) = (handle.clone(), Arc::clone(&after));
                    tokio::spawn(async move { answer(stream, &handle, &after).await });
                }
            }
        }
    }
}

/// Answers one request: the metrics for `GET /metrics`, 404 for any other path, 405 for any
/// other method. A scrape rendered after the run wakes the linger once it is sent.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle, after: &AfterRun) {
    let Ok(Some(request_line)) = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map(Result::ok)
        .map(Option::flatten)
    else {
        return;
    };
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let final_counts = after.over.load(Ordering::SeqCst);
    let (status, body, is_metrics) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", handle.render(), true),
        ("GET", _) => ("404 Not Found", "see /metrics\n".to_owned(), false),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_owned(), false),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if sent.await.is_ok() && is_metrics && final_counts {
        after.scraped.notify_one();
    }
}

/// Reads the request's head (up to the blank line) and returns its first line; `None` when
/// the client sent no complete head within [`MAX_REQUEST`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_REQUEST {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.lines().next().map(str::to_owned))
}
