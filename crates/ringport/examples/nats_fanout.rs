//! Fan-out done by nats-server alone, for comparison with ringport's
//! cluster fan-out: `CONNS` NATS client connections with `SUBS` subscriptions
//! each to one subject, one publisher connection publishing `RATE`
//! messages/s for `SECS` seconds; every delivery is counted and its latency
//! recorded (the publish time rides in the payload).
//!
//! `cargo run --release --features cluster --example nats_fanout -- \
//!     nats://127.0.0.1:4222 CONNS SUBS RATE SECS`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let url = arg(1, "nats://127.0.0.1:4222");
    let conns: usize = arg(2, "100").parse().expect("CONNS");
    let subs: usize = arg(3, "1").parse().expect("SUBS");
    let rate: f64 = arg(4, "100").parse().expect("RATE");
    let secs: f64 = arg(5, "5").parse().expect("SECS");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(url, conns, subs, rate, secs));
}

async fn run(url: String, conns: usize, subs: usize, rate: f64, secs: f64) {
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    for _ in 0..conns {
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 16)
            .connect(url.as_str())
            .await
            .expect("connect");
        for _ in 0..subs {
            let mut sub = client.subscribe("fanout").await.expect("subscribe");
            let delivered = delivered.clone();
            let latencies = latencies.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    let sent = u64::from_be_bytes(m.payload[..8].try_into().unwrap());
                    let now = started.elapsed().as_micros() as u64;
                    latencies.lock().unwrap().push(now.saturating_sub(sent));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        client.flush().await.expect("flush");
    }
    let publisher = async_nats::connect(url.as_str()).await.expect("connect");
    let expected_each = (conns * subs) as u64;
    let mut published = 0u64;
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while began.elapsed().as_secs_f64() < secs {
        tick.tick().await;
        let due = (began.elapsed().as_secs_f64() * rate) as u64;
        while published < due {
            let mut payload = vec![b'.'; 64];
            payload[..8].copy_from_slice(&(started.elapsed().as_micros() as u64).to_be_bytes());
            publisher
                .publish("fanout", payload.into())
                .await
                .expect("publish");
            published += 1;
        }
    }
    publisher.flush().await.expect("flush");
    let want = published * expected_each;
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = delivered.load(Ordering::Relaxed);
        if d >= want {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let took = began.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed);
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "nats fan-out: {conns} connections x {subs} subscriptions, {rate}/s for {secs}s: published {published}, \
         deliveries expected {want}, made {got}; delivered {:.0} msgs/s (incl. drain); latency ms p50 {:.2} \
         p99 {:.2} max {:.2}",
        got as f64 / took,
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
