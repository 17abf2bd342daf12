//! `vdm train --devices` and `--nodes`: the replicas of a data-parallel run
//! ([`vdm_backends::parallel`]). Replica 0 of this process is the trainer the command steps; the
//! others run in threads of their own, each stepping its copy in lockstep with the others through
//! the all-reduce of every step.
//!
//! A replica or process that is lost must not leave the others waiting forever: a replica that
//! fails ends the process with its error, and a [`Watchdog`] ends it when no step has completed
//! for `--peer-timeout` seconds (a process killed elsewhere). Checkpoints are complete or absent
//! at every instant, so ending the process loses nothing that was saved.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vdm_backends::data::ImageSet;
use vdm_backends::model::Trainable;
use vdm_backends::ops::TrainBackend;
use vdm_backends::parallel::{Layout, Replica};
use vdm_backends::train::Trainer;

/// Ends the process with `message` as its error: what a replica's failure, or a lost peer, does.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}; checkpoints already written are intact (continue with `vdm train --resume`)");
    std::process::exit(1)
}

/// Ends the process when no training step has completed for `timeout`: a replica or process of
/// the run stopped answering, and every other one waits for it in the next all-reduce. Dropped,
/// it stops watching.
pub struct Watchdog {
    /// Milliseconds after `start` of the last sign of progress.
    last: Arc<AtomicU64>,
    start: Instant,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts watching; the first step (which waits for every replica to register) has `timeout`
    /// too.
    pub fn start(timeout: Duration) -> Self {
        let (last, start, done) = (Arc::new(AtomicU64::new(0)), Instant::now(), Arc::new(AtomicBool::new(false)));
        let (watched, finished) = (last.clone(), done.clone());
        thread::spawn(move || loop {
            thread::sleep(Duration::from_millis(200));
            if finished.load(Ordering::SeqCst) {
                return;
            }
            let last = watched.load(Ordering::SeqCst);
            if start.elapsed().saturating_sub(Duration::from_millis(last)) > timeout {
                let seconds = timeout.as_secs();
                fail(&if last == 0 {
                    format!(
                        "the run's replicas did not all start within {seconds} s (--peer-timeout): is the orchestrator \
                         running at --orchestrator, and every process of --nodes started?"
                    )
                } else {
                    format!(
                        "no training step completed in {seconds} s (--peer-timeout): a replica or process of the run stopped answering"
                    )
                });
            }
        });
        Self { last, start, done }
    }

    /// Records progress: a step completed.
    pub fn progressed(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Starts this process's replicas `1..` on `devices[1..]` as copies of `trainer` in threads of
/// their own, and makes `trainer` replica 0 on `devices[0]`. Returns once every replica of the run
/// has registered (every process's too, with `--nodes`) and checked that it holds the same run.
pub fn start<B: TrainBackend, M: Trainable<B> + Send + 'static>(
    trainer: &mut Trainer<B, M>,
    devices: &[B::Device],
    layout: &Layout,
    train: &Arc<ImageSet>,
) -> Result<(), String>
where
    M::InnerModule: Send,
{
    if layout.nodes.is_some() {
        quiet_network_layer();
    }
    for (local, device) in devices.iter().enumerate().skip(1) {
        let mut replica = trainer.replicate(device);
        let (layout, device, train) = (layout.clone(), device.clone(), train.clone());
        let rank = layout.rank(local);
        thread::spawn(move || {
            let work = std::panic::AssertUnwindSafe(|| -> vdm_backends::Result<()> {
                replica.join(Replica::join(local, &layout, &device)?)?;
                while replica.step() < replica.run_config().train.steps {
                    replica.train_step(&train)?;
                }
                replica.leave()
            });
            match std::panic::catch_unwind(work) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(&format!("replica {rank}: {e}")),
                Err(_) => fail(&format!("replica {rank} panicked (see the message above)")),
            }
        });
    }
    trainer.join(Replica::join(0, layout, &devices[0])?)?;
    Ok(())
}

/// Keeps the network layer's reports short: burn-communication's log (each connection and
/// transfer at INFO, on standard output) is shown from warnings up, on standard error; and a
/// panic of one of its tasks (tokio's worker threads: burn-collective panics on a connection that
/// broke, and the replica waiting on it then fails with an error) is one line, not a backtrace.
pub fn quiet_network_layer() {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Fails only where a subscriber is already set, which then stays.
    let _ = subscriber.try_init();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().name().is_some_and(|n| n.starts_with("tokio-runtime") || n.starts_with("tokio-rt")) {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("warning: the network layer failed: {message}");
        } else {
            default(info);
        }
    }));
}

/// `vdm orchestrator --port PORT`: serves burn-collective's global orchestrator until Ctrl-C.
pub fn serve_orchestrator(port: u16) -> Result<(), String> {
    quiet_network_layer();
    // The server logs a port it cannot take instead of returning it: try the port first.
    drop(std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("port {port}: {e}"))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the orchestrator's runtime: {e}"))?;
    println!("orchestrator: listening on ws://0.0.0.0:{port} (Ctrl-C stops it)");
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}
