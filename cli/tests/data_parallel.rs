//! `vdm train --devices` and `--nodes`: data-parallel runs, as threads of one process and as
//! processes on loopback through `vdm orchestrator`, train the run of one device; a process killed
//! with SIGKILL stops the others with an error and the run resumes from its last checkpoint.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{s, text, vdm, write_config, TINY};

/// A child process killed when dropped (a failed assertion leaves no server behind).
struct Running(Option<Child>);

impl Running {
    /// Waits for the process to end.
    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }

    /// Kills the process and returns what it wrote.
    fn stop(mut self) -> Output {
        self.kill();
        self.output()
    }

    /// Whether the process has ended.
    fn exited(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        self.0.as_mut().unwrap().kill().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_vdm"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vdm binary starts");
    Running(Some(child))
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `vdm orchestrator` on a free port, and its address.
fn orchestrator() -> (Running, String) {
    let port = free_port();
    let server = spawn(&["orchestrator", "--port", &port.to_string()]);
    let address = format!("ws://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the orchestrator did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, address)
}

/// `args`, then the arguments of process `rank` of 2.
fn as_node(args: &[&str], rank: usize, orchestrator: &str) -> Vec<String> {
    let address = format!("ws://127.0.0.1:{}", free_port());
    let node =
        ["--nodes", "2", "--node-rank", &rank.to_string(), "--orchestrator", orchestrator, "--node-address", &address];
    args.iter().chain(&node).map(|a| a.to_string()).collect()
}

/// Every step's loss and the final evaluation of the run in `dir`, from its metrics.jsonl.
fn losses_and_bound(dir: &Path) -> (Vec<f64>, f64) {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses = lines.iter().filter_map(|l| l["loss"].as_f64()).collect();
    (losses, lines.last().unwrap()["eval"]["mean"].as_f64().expect("the run ends with its evaluation"))
}

fn assert_close(what: &str, got: &(Vec<f64>, f64), want: &(Vec<f64>, f64)) {
    assert_eq!(got.0.len(), want.0.len(), "{what}: another number of steps");
    for (step, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{what}: step {}: loss {a} against {b} on one device", step + 1);
    }
    assert!((got.1 - want.1).abs() <= 1e-5 * want.1, "{what}: final bound {} against {}", got.1, want.1);
}

/// The tiny run for 6 steps: on one device, on two replicas in threads, on two processes.
#[test]
fn replicas_in_threads_and_in_processes_train_the_one_device_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &TINY.replace("steps = 4", "steps = 6"));
    let run = |name: &str| s(&tmp.path().join(name));
    let train = |args: &[String]| {
        let out = vdm(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{args:?}:\n{}", text(&out));
        text(&out)
    };
    let base = |name: &str, extra: &[&str]| {
        let dir = run(name);
        let args = [["train", "--config", &config, "--run", &dir].as_slice(), extra].concat();
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    train(&base("one", &[]));
    let threads = train(&base("threads", &["--devices", "cpu,cpu"]));
    assert!(threads.contains("data-parallel: replicas 0..2 of 2"), "{threads}");

    let (_server, address) = orchestrator();
    let processes = run("processes");
    let node = |rank| as_node(&["train", "--config", &config, "--run", &processes], rank, &address);
    let second = spawn(&node(1));
    let first = train(&node(0));
    assert!(first.contains("process 0 of 2"), "{first}");
    let second = second.output();
    assert!(second.status.success(), "process 1:\n{}", text(&second));

    let one = losses_and_bound(&tmp.path().join("one"));
    assert_close("2 threads", &losses_and_bound(&tmp.path().join("threads")), &one);
    assert_close("2 processes", &losses_and_bound(&tmp.path().join("processes")), &one);
}

/// The step of the newest checkpoint in the run directory `run`, if any.
fn newest_checkpoint(run: &Path) -> Option<usize> {
    std::fs::read_dir(run)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().strip_prefix("step-")?.parse().ok())
        .max()
}

/// SIGKILL of process 1 mid-run: process 0 stops within the peer timeout with an error that says
/// its checkpoint is intact, and the run resumes from that checkpoint on one device.
#[test]
fn a_killed_process_stops_the_run_and_it_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        &TINY.replace("steps = 4", "steps = 100000").replace("[eval]\nevery = 2", "[eval]\nevery = 0"),
    );
    let run = tmp.path().join("run");
    let (_server, address) = orchestrator();
    let train = ["train", "--config", &config, "--run", &s(&run), "--peer-timeout", "10"];
    let mut second = spawn(&as_node(&train, 1, &address));
    let mut first = spawn(&as_node(&train, 0, &address));

    let deadline = Instant::now() + Duration::from_secs(120);
    while newest_checkpoint(&run).is_none_or(|step| step < 10) {
        if Instant::now() > deadline || first.exited() || second.exited() {
            panic!(
                "the run did not reach step 10 (or a process ended):\n{}\n{}",
                text(&first.stop()),
                text(&second.stop())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    second.kill();
    let killed = Instant::now();
    let first = first.output();
    let waited = killed.elapsed();
    let said = text(&first);
    assert!(!first.status.success(), "process 0 went on:\n{said}");
    // burn-collective reports the lost peer at once, or (killed in some phases of an all-reduce)
    // never: then the watchdog's 10 s end it.
    assert!(waited < Duration::from_secs(20), "process 0 took {waited:?} to stop:\n{said}");
    assert!(said.contains("was lost") || said.contains("stopped answering"), "{said}");
    assert!(said.contains("intact"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    eprintln!("process 0 stopped {:.2} s after the kill: {}", waited.as_secs_f64(), said.lines().last().unwrap());

    let saved = newest_checkpoint(&run).unwrap();
    let target = (saved + 2).to_string();
    let resumed = vdm(&["train", "--run", &s(&run), "--resume", "--steps", &target]);
    let resumed_text = text(&resumed);
    assert!(resumed.status.success(), "{resumed_text}");
    assert!(resumed_text.contains(&format!("at step {saved}")), "{resumed_text}");
    assert!(run.join(format!("step-{:07}", saved + 2)).exists(), "{resumed_text}");
}
