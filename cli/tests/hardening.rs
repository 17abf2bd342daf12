//! Bad input and faults get clear errors, never a panic, a wrong number or lost data.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_fails_with, s, text, trained_run, vdm, write_config, TINY};

fn train_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), config);
    vdm(&["train", "--config", &path, "--run", &s(&dir.path().join("r"))])
}

/// A bound with very many steps is computed in f64 where it matters: it equals the continuous
/// one (same noise), instead of collapsing; beyond 10⁹ steps it is refused.
#[test]
fn bounds_with_very_many_steps_stay_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    let json = dir.path().join("e.json");
    let out =
        vdm(&["eval", "--checkpoint", &run, "--time-steps", "0", "--time-steps", "100000000", "--json", &s(&json)]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let (continuous, many) =
        (report["bounds"][0]["bpd"].as_f64().unwrap(), report["bounds"][1]["bpd"].as_f64().unwrap());
    let diffusion = report["bounds"][1]["diffusion"].as_f64().unwrap();
    assert!(
        (continuous - many).abs() < 1e-3 && diffusion > 0.5,
        "T = 10⁸ gives {many} bpd (diffusion {diffusion}), continuous {continuous}"
    );
    let out = vdm(&["eval", "--checkpoint", &run, "--time-steps", "1000000000000"]);
    assert_fails_with(&out, &["--time-steps", "beyond the supported 1000000000"]);
}

#[test]
fn arguments_out_of_range_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    assert_fails_with(&vdm(&["eval", "--checkpoint", &run, "--limit", "0"]), &["--limit must be at least 1"]);
    assert_fails_with(&vdm(&["eval", "--checkpoint", &run, "--json", "/tmp"]), &["/tmp is a directory"]);
    assert_fails_with(
        &vdm(&["sample", "--checkpoint", &run, "--out", "/nonexistent/x.png"]),
        &["/nonexistent", "does not exist"],
    );
    assert_fails_with(&vdm(&["sample", "--checkpoint", &run, "--columns", "0"]), &["--columns must be at least 1"]);
    assert_fails_with(&vdm(&["schedule", "--points", "100000000"]), &["--points must be between 2 and"]);
    // A grid too large for PNG or memory is refused before sampling starts.
    let start = Instant::now();
    let out = vdm(&[
        "sample",
        "--checkpoint",
        &run,
        "--n",
        "1000000",
        "--scale",
        "100000",
        "--out",
        &s(&dir.path().join("g.png")),
    ]);
    assert_fails_with(&out, &["--scale"]);
    assert!(start.elapsed() < Duration::from_secs(20), "refused only after {:?}", start.elapsed());
    // A non-empty --out-dir is never written into.
    let busy = dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.png"), b"mine").unwrap();
    assert_fails_with(
        &vdm(&["sample", "--checkpoint", &run, "--out-dir", &s(&busy), "--out", &s(&dir.path().join("g.png"))]),
        &["is not empty"],
    );
    assert_eq!(fs::read(busy.join("keep.png")).unwrap(), b"mine");
}

/// Every number of a configuration is checked, finite and in range, and named when wrong.
#[test]
fn every_configuration_number_is_validated() {
    let cases = [
        (
            "gamma_min = -13.3\ngamma_max = 5.0",
            "gamma_min = nan\ngamma_max = 5.0",
            "schedule needs finite gamma_min < gamma_max",
        ),
        (
            "gamma_min = -13.3\ngamma_max = 5.0",
            "gamma_min = -40.0\ngamma_max = 5.0",
            "schedule endpoints must lie in [-30, 30]",
        ),
        (
            "warmup_steps = 2",
            "warmup_steps = 2\nweight_decay = nan",
            "train.weight_decay must be non-negative and finite",
        ),
        ("warmup_steps = 2", "warmup_steps = 2\nepsilon = -1.0", "train.epsilon must be positive"),
        ("lr = 0.002", "lr = inf", "train.lr must be positive and finite"),
        ("fourier_exponents = [4]", "fourier_exponents = [200]", "score.fourier_exponents must lie in 0..=16"),
        ("n_embd = 8", "n_embd = 1000000", "score.n_embd must be even and between 4 and 8192"),
        ("n_embd = 8", "n_embd = 8\nchannels = 1", "unknown field `channels`"),
        ("dropout = 0.0", "dropout = nan", "score.dropout must be in [0, 1)"),
        (
            "test_size = 40",
            "test_size = 1797",
            "data.test_size must leave at least one of the 1797 digits for training",
        ),
        (
            "batch_size = 40\n",
            "batch_size = 40\ntime_steps = 2000000000\n",
            "eval.time_steps must be at most 1000000000",
        ),
        ("checkpoint_every = 2", "checkpoint_every = 2\nkeep_checkpoints = 0", "keep_checkpoints must be at least 1"),
    ];
    for (from, to, expected) in cases {
        assert!(TINY.contains(from), "{from}");
        let out = train_with(&TINY.replacen(from, to, 1));
        assert_fails_with(&out, &["run.toml", expected]);
    }
    // The same for the synthetic Gaussian source.
    let gaussian = |std: &str| {
        TINY.replace(
            "kind = \"digits\"\ntest_size = 40",
            &format!(
                "kind = \"gaussian\"\nchannels = 1\nheight = 4\nwidth = 4\nstd = {std}\ntrain_size = 64\ntest_size = 8"
            ),
        )
    };
    for std in ["-5.0", "nan", "0.0"] {
        assert_fails_with(&train_with(&gaussian(std)), &["data.std must be positive and finite"]);
    }
    for garbage in ["", "[data", "\u{0}\u{1}binary", "[data]\nkind = \"nope\""] {
        let out = train_with(garbage);
        assert_fails_with(&out, &["run.toml"]);
    }
}

/// Sizes that cannot fit in memory are refused with the estimate, not an allocation abort.
#[test]
fn sizes_that_cannot_fit_are_refused_with_an_estimate() {
    let out = train_with(&TINY.replace("batch_size = 8", "batch_size = 100000000"));
    assert_fails_with(&out, &["needs about", "available", "train.batch_size"]);
}

/// The model's channels come from the data: a 3-channel CSV trains with a config that never
/// mentions channels.
#[test]
fn the_model_takes_its_channels_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rgb.csv");
    let line = |k: usize| (0..12).map(|i| ((i * 7 + k * 3) % 16).to_string()).collect::<Vec<_>>().join(",");
    fs::write(&csv, (0..20).map(|k| line(k) + "\n").collect::<String>()).unwrap();
    let config = TINY.replace(
        "kind = \"digits\"\ntest_size = 40",
        &format!(
            "kind = \"csv\"\npath = \"{}\"\nchannels = 3\nheight = 2\nwidth = 2\nmax_value = 15\ntest_size = 4",
            csv.display()
        ),
    );
    let out = train_with(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("of 3x2x2"), "{}", text(&out));
}

/// Writes `count` PNGs of `[c, h, w]` (grey or RGB) with varied pixels into `dir`.
fn write_pngs(dir: &std::path::Path, count: usize, [c, h, w]: [usize; 3]) {
    fs::create_dir_all(dir).unwrap();
    for k in 0..count {
        let pixels: Vec<u8> = (0..c * h * w).map(|i| ((i * 37 + k * 11) % 256) as u8).collect();
        let mut enc = png::Encoder::new(fs::File::create(dir.join(format!("{k:02}.png"))).unwrap(), w as u32, h as u32);
        enc.set_color(if c == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale });
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&pixels).unwrap();
    }
}

/// A run's data files can change after training: evaluation, compression and resuming refuse
/// images of another size or channel count, naming both shapes, instead of scoring them (another
/// size) or panicking in a kernel (another channel count).
#[test]
fn commands_refuse_data_that_no_longer_has_the_trained_shape() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_pngs(&images, 24, [1, 4, 4]);
    let config = TINY.replace(
        "kind = \"digits\"\ntest_size = 40",
        &format!("kind = \"png\"\ndir = \"{}\"\ntest_size = 4", images.display()),
    );
    let run = dir.path().join("r");
    let out = vdm(&["train", "--config", &write_config(dir.path(), &config), "--run", &s(&run)]);
    assert!(out.status.success(), "{}", text(&out));
    let compressed = s(&dir.path().join("x.vbb"));
    for shape in [[1, 8, 8], [3, 4, 4]] {
        fs::remove_dir_all(&images).unwrap();
        write_pngs(&images, 24, shape);
        let now = format!("{shape:?}");
        for args in [
            vec!["eval", "--checkpoint", &s(&run)],
            vec!["compress", "--checkpoint", &s(&run), "--test-set", "--steps", "2", "-o", &compressed],
            vec!["train", "--run", &s(&run), "--resume", "--steps", "6"],
        ] {
            let out = vdm(&args);
            assert_fails_with(&out, &["trained on images of [1, 4, 4]", &now]);
        }
    }
}

/// An output file that exists is never replaced silently: every command that writes one refuses
/// before any work and leaves it as it was, unless --force.
#[test]
fn existing_output_files_are_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let existing = |name: &str| {
        let path = dir.path().join(name);
        fs::write(&path, "keep").unwrap();
        s(&path)
    };
    let (grid, json, packed) = (existing("grid.png"), existing("eval.json"), existing("d.vbb"));
    let plots = dir.path().join("plots");
    fs::create_dir(&plots).unwrap();
    fs::write(plots.join("gamma.svg"), "keep").unwrap();
    for args in [
        vec!["sample", "--checkpoint", &s(&run), "--n", "2", "--steps", "2", "--out", &grid],
        vec!["eval", "--checkpoint", &s(&run), "--limit", "4", "--json", &json],
        vec!["compress", "--checkpoint", &s(&run), "--test-set", "--limit", "2", "--steps", "2", "-o", &packed],
        vec!["plot", "--run", &s(&run), "--out-dir", &s(&plots)],
    ] {
        assert_fails_with(&vdm(&args), &["exists", "--force", "nothing was written"]);
    }
    for path in [&grid, &json, &packed, &s(&plots.join("gamma.svg"))] {
        assert_eq!(fs::read_to_string(path).unwrap(), "keep", "{path} was changed");
    }
    let forced = vdm(&["sample", "--checkpoint", &s(&run), "--n", "2", "--steps", "2", "--out", &grid, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(fs::read(&grid).unwrap().starts_with(b"\x89PNG"), "--force replaces the file");
}

/// A run that fails before its first checkpoint (here the loss becomes NaN at step 2) leaves no
/// checkpoint, and the directory takes a new run: nothing blocks the next `vdm train`.
#[test]
fn a_run_that_failed_before_its_first_checkpoint_does_not_block_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&dir.path().join("r"));
    let diverging = write_config(dir.path(), &TINY.replace("lr = 0.002", "lr = 1e30"));
    assert_fails_with(
        &vdm(&["train", "--config", &diverging, "--run", &run]),
        &["the loss became", "no checkpoint had been written"],
    );
    let config = write_config(dir.path(), TINY);
    let out = vdm(&["train", "--config", &config, "--run", &run]);
    assert!(out.status.success() && text(&out).contains("starting anew"), "{}", text(&out));
    let metrics = fs::read_to_string(dir.path().join("r/metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["lr"].as_f64().is_none_or(|lr| lr < 1.0), "the failed run's log was kept: {metrics}");
    }
}

/// A run directory is never restarted over: not when `latest` is missing, empty or stale.
#[test]
fn a_run_whose_latest_file_is_gone_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let before_config = fs::read_to_string(run.join("config.toml")).unwrap();
    let before_metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let config = write_config(dir.path(), TINY);
    for latest in [None, Some(""), Some("step-0000002")] {
        match latest {
            None => fs::remove_file(run.join("latest")).unwrap_or(()),
            Some(t) => fs::write(run.join("latest"), t).unwrap(),
        }
        let out = vdm(&["train", "--config", &config, "--run", &s(&run)]);
        assert_fails_with(&out, &["already holds a run", "step-0000004", "--resume", "nothing was changed"]);
        assert!(run.join("step-0000004/state.json").is_file(), "the checkpoint must survive");
        assert_eq!(fs::read_to_string(run.join("config.toml")).unwrap(), before_config);
        assert_eq!(fs::read_to_string(run.join("metrics.jsonl")).unwrap(), before_metrics);
    }
    // --resume finds the newest checkpoint without `latest`, and says so.
    fs::remove_file(run.join("latest")).unwrap();
    let out = vdm(&["train", "--run", &s(&run), "--resume", "--steps", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("warning") && text(&out).contains("at step 4"), "{}", text(&out));
}

/// A crash while a line of metrics.jsonl is written leaves it torn: resuming drops that fragment
/// (and says so) instead of gluing the next line onto it, so every line parses and `vdm plot` works.
#[test]
fn resume_repairs_a_torn_metrics_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let metrics = run.join("metrics.jsonl");
    let mut logged = fs::read_to_string(&metrics).unwrap();
    logged.push_str("{\"step\": 3, \"lo");
    fs::write(&metrics, &logged).unwrap();
    let out = vdm(&["train", "--run", &s(&run), "--resume", "--steps", "5"]);
    assert!(out.status.success() && text(&out).contains("torn last line"), "{}", text(&out));
    let lines = fs::read_to_string(&metrics).unwrap();
    for line in lines.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "unparsable line {line:?}");
    }
    assert!(lines.lines().any(|l| l.contains("\"step\":5")), "the resumed steps are logged: {lines}");
    fs::create_dir(dir.path().join("plots")).unwrap();
    let plot = vdm(&["plot", "--run", &s(&run), "--out-dir", &s(&dir.path().join("plots"))]);
    assert!(plot.status.success(), "{}", text(&plot));
}

#[test]
fn resume_with_fewer_steps_than_taken_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let before = fs::read_to_string(run.join("config.toml")).unwrap();
    let out = vdm(&["train", "--run", &s(&run), "--resume", "--steps", "3"]);
    assert_fails_with(&out, &["already taken 4 steps", "--steps must exceed"]);
    assert_eq!(fs::read_to_string(run.join("config.toml")).unwrap(), before);
    let done = vdm(&["train", "--run", &s(&run), "--resume"]);
    assert!(done.status.success() && text(&done).contains("the run is complete"), "{}", text(&done));
}

/// Damaged checkpoints give an error naming the file from every command that reads them.
#[test]
fn damaged_checkpoints_are_reported_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let ema = run.join("step-0000004/ema.mpk");
    let bytes = fs::read(&ema).unwrap();
    fs::write(&ema, &bytes[..bytes.len() - 10]).unwrap();
    let (run, grid) = (s(&run), s(&dir.path().join("x.png")));
    for args in [
        vec!["eval", "--checkpoint", &run],
        vec!["sample", "--checkpoint", &run, "--out", &grid],
        vec!["train", "--run", &run, "--resume", "--steps", "9"],
    ] {
        assert_fails_with(&vdm(&args), &["ema.mpk", "truncated"]);
    }
}

/// Ctrl-C (SIGINT) and SIGTERM save a checkpoint and exit with status 130 and 143; the run then
/// resumes.
#[test]
fn ctrl_c_and_sigterm_save_and_exit_128_plus_the_signal() {
    for (signal, status) in [("INT", 130), ("TERM", 143)] {
        stop_and_resume(signal, status);
    }
}

fn stop_and_resume(signal: &str, status: i32) {
    let dir = tempfile::tempdir().unwrap();
    let long = TINY
        .replace("steps = 4", "steps = 100000")
        .replace("checkpoint_every = 2", "checkpoint_every = 100000")
        .replace("\nevery = 2", "\nevery = 0");
    let config = write_config(dir.path(), &long);
    let run = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vdm"))
        .args(["train", "--config", &config, "--run", &s(&run)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first training step (the first progress line), then interrupt.
    let metrics = run.join("metrics.jsonl");
    let start = Instant::now();
    while fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 3) {
        assert!(child.try_wait().unwrap().is_none(), "vdm train exited early");
        assert!(start.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Meanwhile a second trainer on the same run is refused.
    let second = vdm(&["train", "--run", &s(&run), "--resume", "--steps", "200000"]);
    assert_fails_with(&second, &["another `vdm train` is running"]);
    let kill = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(status), "SIG{signal}: {}", text(&out));
    assert!(text(&out).contains("interrupted at step") && text(&out).contains("--resume"), "{}", text(&out));
    let latest = fs::read_to_string(run.join("latest")).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join(latest).join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(step >= 2, "saved at step {step}");
    let next = (step + 1).to_string();
    let resumed = vdm(&["train", "--run", &s(&run), "--resume", "--steps", &next]);
    assert!(resumed.status.success() && text(&resumed).contains(&format!("at step {step}")), "{}", text(&resumed));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_without_it_says_how_to_get_it() {
    let out = vdm(&["bench", "--device", "cuda"]);
    assert_fails_with(&out, &["built without CUDA support", "cargo build --release --features cuda -p vdm-cli"]);
    assert_fails_with(&vdm(&["crosscheck", "--device", "cuda"]), &["--features cuda -p vdm-cli"]);
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn asking_for_wgpu_without_it_says_how_to_get_it() {
    let out = vdm(&["sample", "--device", "wgpu"]);
    assert_fails_with(
        &out,
        &["built without wgpu (Vulkan) support", "cargo build --release --features wgpu -p vdm-cli"],
    );
    assert_fails_with(&vdm(&["crosscheck", "--device", "wgpu"]), &["--features wgpu -p vdm-cli"]);
    assert_fails_with(&vdm(&["crosscheck", "--device", "cpu"]), &["compares another backend"]);
}

#[test]
fn missing_checkpoints_and_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails_with(&vdm(&["eval", "--checkpoint", &s(&dir.path().join("nowhere"))]), &["nowhere", "does not exist"]);
    assert_fails_with(&vdm(&["eval", "--checkpoint", &s(dir.path())]), &["holds no checkpoint"]);
    assert_fails_with(
        &vdm(&["train", "--config", &s(&dir.path().join("absent.toml")), "--run", &s(&dir.path().join("r"))]),
        &["absent.toml", "no such file"],
    );
}

/// A file where a command expects a directory is named as such, and left as it was.
#[test]
fn a_file_given_for_a_directory_is_named_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    fs::write(&file, "keep").unwrap();
    let file = s(&file);
    assert_fails_with(&vdm(&["train", "--run", &file]), &["afile is a file; --run takes a directory"]);
    assert_fails_with(&vdm(&["train", "--run", &file, "--resume"]), &["afile is a file; --run takes a directory"]);
    assert_fails_with(
        &vdm(&["classifier", "train", "--out", &file, "--steps", "1"]),
        &["afile is a file; --out takes a directory"],
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep");
}

/// `vdm fid` measures against the classifier's test images, so a classifier trained on another
/// dataset of the same image shape is refused, naming both datasets.
#[test]
fn fid_refuses_a_classifier_of_another_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    let images = dir.path().join("classes");
    for class in ["a", "b"] {
        write_pngs(&images.join(class), 12, [1, 8, 8]);
    }
    let config = TINY.replace(
        "kind = \"digits\"\ntest_size = 40",
        &format!("kind = \"png\"\ndir = \"{}\"\ntest_size = 6", images.display()),
    );
    let (other, classifier) = (dir.path().join("other"), s(&dir.path().join("classifier")));
    fs::create_dir(&other).unwrap();
    let out =
        vdm(&["classifier", "train", "--config", &write_config(&other, &config), "--out", &classifier, "--steps", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vdm(&["fid", "--checkpoint", &run, "--classifier", &classifier, "--n", "4", "--steps", "2"]);
    assert_fails_with(
        &out,
        &["trained on {\"kind\":\"digits\"", "the classifier on {\"kind\":\"png\"", "another dataset"],
    );
}

/// A compressed file needs its exact checkpoint: compress marks it with a `keep` file that
/// training's pruning honours, decompress finds it by the recorded path or among a run's
/// checkpoints, and when it is gone the error names its step, directory and weights.
#[test]
fn compressed_files_keep_and_find_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let used = fs::canonicalize(run.join("step-0000004")).unwrap();
    let file = s(&dir.path().join("x.vbb"));
    let out = vdm(&["compress", "--checkpoint", &s(&run), "--steps", "2", "--test-set", "--limit", "3", "-o", &file]);
    assert!(out.status.success() && text(&out).contains("holds a `keep` file"), "{}", text(&out));
    assert_eq!(fs::read_to_string(used.join("keep")).unwrap(), format!("compressed file {file}\n"));
    // Training on (keep_checkpoints = 1) prunes every other checkpoint, never this one.
    let out = vdm(&["train", "--run", &s(&run), "--resume", "--steps", "8"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(used.is_dir() && run.join("step-0000008").is_dir() && !run.join("step-0000006").exists());
    // Found by the path the file records, or by its weights among the run's checkpoints.
    for (name, extra) in [("a", vec![]), ("b", vec!["--checkpoint", run.to_str().unwrap()])] {
        let out_dir = s(&dir.path().join(name));
        let out = vdm(&[vec!["decompress", &file, "-o", &out_dir], extra].concat());
        assert!(out.status.success() && text(&out).contains("step 4"), "{}", text(&out));
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 3);
    }
    // Gone: the error says exactly what is missing.
    fs::rename(&used, dir.path().join("moved")).unwrap();
    let needed = format!("needs the checkpoint of step 4, {}", used.display());
    assert_fails_with(&vdm(&["decompress", &file, "-o", &s(&dir.path().join("c"))]), &[&needed, "does not exist"]);
    assert_fails_with(
        &vdm(&["decompress", &file, "--checkpoint", &s(&run), "-o", &s(&dir.path().join("d"))]),
        &[&needed, "weights SHA-256", "holds no checkpoint with those weights (it holds step 8)"],
    );
}
