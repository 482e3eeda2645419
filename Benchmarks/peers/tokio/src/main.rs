// Tokio peer of the GMP benchmarks: the runtime workloads with the same
// parameters as ours and Go's, printed in the same JSON format as
// `Benchmarks --json`.
//
//     gmppeers-tokio [-filter NAME]
//
// Every workload runs as a task on a multi-threaded runtime whose worker
// count is GMPPROCS (the driver sets it as it sets GOMAXPROCS for Go), or
// the number of cores. Tokio has no unbuffered channel: pingpong uses
// mpsc channels of capacity 1, the nearest.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, Semaphore};

struct Res {
    name: &'static str,
    ops: usize,
    ns_per_op: f64,
    extra: String,
}

fn rss_bytes() -> i64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = s.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn per_op(t: Duration, n: usize) -> f64 {
    t.as_nanos() as f64 / n as f64
}

/// Go's sync.WaitGroup, for tasks: `done` counts down, `wait` waits for zero.
struct WaitGroup {
    left: AtomicUsize,
    zero: Notify,
}

impl WaitGroup {
    fn new(n: usize) -> Arc<WaitGroup> {
        Arc::new(WaitGroup { left: AtomicUsize::new(n), zero: Notify::new() })
    }
    fn done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_one(); // one waiter; a permit if it is not waiting yet
        }
    }
    async fn wait(&self) {
        while self.left.load(Ordering::Acquire) != 0 {
            self.zero.notified().await;
        }
    }
}

async fn spawn() -> Res {
    let n = 1_000_000;
    let wg = WaitGroup::new(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let wg = wg.clone();
        tokio::spawn(async move { wg.done() });
    }
    wg.wait().await;
    Res { name: "spawn", ops: n, ns_per_op: per_op(t0.elapsed(), n), extra: String::new() }
}

async fn yield_(workers: usize) -> Res {
    let total = 4_000_000;
    let tasks = 2 * workers;
    let wg = WaitGroup::new(tasks);
    let t0 = Instant::now();
    for _ in 0..tasks {
        let wg = wg.clone();
        tokio::spawn(async move {
            for _ in 0..total / tasks {
                tokio::task::yield_now().await;
            }
            wg.done();
        });
    }
    wg.wait().await;
    Res { name: "yield", ops: total, ns_per_op: per_op(t0.elapsed(), total), extra: format!("gs={tasks}") }
}

fn node(d: u32, depth: u32, wg: Arc<WaitGroup>) {
    if d < depth {
        let (a, b) = (wg.clone(), wg.clone());
        tokio::spawn(async move { node(d + 1, depth, a) });
        tokio::spawn(async move { node(d + 1, depth, b) });
    }
    wg.done();
}

async fn spawntree() -> Res {
    let depth = 20;
    let total = (1usize << (depth + 1)) - 1;
    let wg = WaitGroup::new(total);
    let t0 = Instant::now();
    let w = wg.clone();
    tokio::spawn(async move { node(0, depth, w) });
    wg.wait().await;
    Res { name: "spawntree", ops: total, ns_per_op: per_op(t0.elapsed(), total), extra: format!("depth={depth}") }
}

/// Starts n tasks that each block on a gate, holds them for `hold` after
/// the last has started, releases them: (time to start them all, RSS per task).
async fn block_tasks(n: usize, hold: Duration) -> (Duration, i64) {
    let before = rss_bytes();
    let gate = Arc::new(Semaphore::new(0));
    let started = WaitGroup::new(n);
    let finished = WaitGroup::new(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let (gate, started, finished) = (gate.clone(), started.clone(), finished.clone());
        tokio::spawn(async move {
            started.done();
            gate.acquire().await.unwrap().forget();
            finished.done();
        });
    }
    started.wait().await;
    let t1 = t0.elapsed();
    tokio::time::sleep(hold).await;
    let after = rss_bytes();
    gate.add_permits(n);
    finished.wait().await;
    (t1, (after - before) / n as i64)
}

async fn parked() -> Res {
    let n = 100_000;
    let (t, per) = block_tasks(n, Duration::ZERO).await;
    Res { name: "parked", ops: n, ns_per_op: per_op(t, n), extra: format!("rss_bytes_per_g={per}") }
}

async fn idle() -> Res {
    let n = 100_000;
    let (_, per) = block_tasks(n, Duration::from_secs(3)).await;
    Res { name: "idle", ops: n, ns_per_op: 0.0, extra: format!("rss_bytes_per_g={per}") }
}

async fn timers() -> Res {
    let n = 100_000;
    let wg = WaitGroup::new(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let wg = wg.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            wg.done();
        });
    }
    wg.wait().await;
    Res { name: "timers", ops: n * 10, ns_per_op: per_op(t0.elapsed(), n * 10), extra: String::new() }
}

async fn pingpong() -> Res {
    let n = 1_000_000;
    let (ping_tx, mut ping_rx) = mpsc::channel::<usize>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<usize>(1);
    let echo = tokio::spawn(async move {
        while let Some(v) = ping_rx.recv().await {
            pong_tx.send(v).await.unwrap();
        }
    });
    let t0 = Instant::now();
    for i in 0..n {
        ping_tx.send(i).await.unwrap();
        pong_rx.recv().await.unwrap();
    }
    let t = t0.elapsed();
    drop(ping_tx);
    echo.await.unwrap();
    Res { name: "pingpong", ops: n, ns_per_op: per_op(t, n), extra: "ns per round trip".into() }
}

async fn buffered() -> Res {
    let n = 10_000_000usize;
    let (tx, mut rx) = mpsc::channel::<usize>(1024);
    let t0 = Instant::now();
    tokio::spawn(async move {
        for i in 0..n {
            tx.send(i).await.unwrap();
        }
    });
    let mut sum = 0usize;
    while let Some(v) = rx.recv().await {
        sum += v;
    }
    assert_eq!(sum, n * (n - 1) / 2);
    Res { name: "buffered", ops: n, ns_per_op: per_op(t0.elapsed(), n), extra: String::new() }
}

async fn fanin() -> Res {
    let (n, producers) = (8_000_000usize, 8);
    let (tx, mut rx) = mpsc::channel::<usize>(128);
    let t0 = Instant::now();
    for _ in 0..producers {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..n / producers {
                tx.send(i).await.unwrap();
            }
        });
    }
    drop(tx);
    for _ in 0..n {
        rx.recv().await.unwrap();
    }
    Res { name: "fanin", ops: n, ns_per_op: per_op(t0.elapsed(), n), extra: format!("producers={producers}") }
}

/// select and selectonce: tokio::select! over 4 receivers in a loop (the
/// one form Tokio has), each channel of capacity 16 fed by a producer.
async fn select(name: &'static str) -> Res {
    let n = 4_000_000usize;
    let mut rxs = Vec::new();
    let t0 = Instant::now();
    for _ in 0..4 {
        let (tx, rx) = mpsc::channel::<usize>(16);
        rxs.push(rx);
        tokio::spawn(async move {
            for i in 0..n / 4 {
                tx.send(i).await.unwrap();
            }
        });
    }
    let (mut r0, mut r1, mut r2, mut r3) = {
        let mut it = rxs.into_iter();
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    let mut got = 0;
    while got < n {
        tokio::select! {
            Some(_) = r0.recv() => got += 1,
            Some(_) = r1.recv() => got += 1,
            Some(_) = r2.recv() => got += 1,
            Some(_) = r3.recv() => got += 1,
        }
    }
    Res { name, ops: n, ns_per_op: per_op(t0.elapsed(), n), extra: String::new() }
}

async fn run(name: &str, workers: usize) -> Option<Res> {
    Some(match name {
        "spawn" => spawn().await,
        "yield" => yield_(workers).await,
        "spawntree" => spawntree().await,
        "parked" => parked().await,
        "idle" => idle().await,
        "timers" => timers().await,
        "pingpong" => pingpong().await,
        "buffered" => buffered().await,
        "fanin" => fanin().await,
        "select" => select("select").await,
        "selectonce" => select("selectonce").await,
        _ => return None,
    })
}

const ALL: [&str; 11] = [
    "spawn", "yield", "spawntree", "parked", "idle", "timers", "pingpong", "buffered", "fanin", "select", "selectonce",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = match args.iter().position(|a| a == "-filter") {
        Some(i) => args.get(i + 1).cloned(),
        None => None,
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = std::env::var("GMPPROCS").ok().and_then(|v| v.parse().ok()).unwrap_or(cores);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    for name in ALL {
        if filter.as_deref().map_or(false, |f| f != name) {
            continue;
        }
        // The workload is a task itself, as Go's main goroutine is a goroutine.
        let r = rt.block_on(async move { tokio::spawn(async move { run(name, workers).await }).await.unwrap() });
        if let Some(r) = r {
            println!(
                "{{\"name\":\"{}\",\"ops\":{},\"ns_per_op\":{},\"extra\":\"{}\"}}",
                r.name, r.ops, r.ns_per_op, r.extra
            );
        }
    }
}
