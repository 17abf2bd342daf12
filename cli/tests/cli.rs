//! The `vdm` binary end to end, on a tiny model: train, resume, evaluate, sample, schedule.

mod common;

use common::{assert_fails_with, s, text, tiny_ddpm, trained_run, vdm, write_config, TINY};

#[test]
fn train_resume_eval_sample_and_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TINY);
    let run = dir.path().join("run");
    let run_s = s(&run);

    let out = vdm(&["train", "--config", &config, "--run", &run_s]);
    assert!(out.status.success(), "train failed:\n{}", text(&out));
    let log = text(&out);
    for expected in [
        "data: 1757 train / 40 test images of 1x8x8",
        "loaded in",
        "per-pixel categorical",
        "test bpd T=inf (continuous)",
    ] {
        assert!(log.contains(expected), "`{expected}` missing from:\n{log}");
    }
    // Without a terminal, progress comes as plain lines.
    assert!(log.contains("train 1/4 (25.0%)") && log.contains("train 4/4 (100.0%)"), "{log}");
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap(), "step-0000004");
    assert!(run.join("config.toml").is_file() && run.join("metrics.jsonl").is_file());

    // Resuming with more steps continues from step 4.
    let resumed = vdm(&["train", "--run", &run_s, "--resume", "--steps", "6"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("resuming") && text(&resumed).contains("at step 4"), "{}", text(&resumed));
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap(), "step-0000006");
    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\"") && !l.contains("eval"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "every step logged once");

    let json = dir.path().join("eval.json");
    let eval = vdm(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--time-steps",
        "0",
        "--time-steps",
        "10",
        "--limit",
        "16",
        "--json",
        &s(&json),
    ]);
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(text(&eval).contains("T=10:") && text(&eval).contains("± "), "{}", text(&eval));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["bounds"].as_array().unwrap().len(), 2);
    assert_eq!(report["bounds"][1]["images"], 16);

    let png = dir.path().join("s.png");
    let singles = dir.path().join("singles");
    let sample = vdm(&[
        "sample",
        "--checkpoint",
        &run_s,
        "--n",
        "4",
        "--steps",
        "5",
        "--out",
        &s(&png),
        "--out-dir",
        &s(&singles),
    ]);
    assert!(sample.status.success(), "{}", text(&sample));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let mut files: Vec<String> =
        std::fs::read_dir(&singles).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["sample-000000.png", "sample-000001.png", "sample-000002.png", "sample-000003.png"]);

    let plot = dir.path().join("g.svg");
    let schedule = vdm(&["schedule", "--checkpoint", &run_s, "--points", "3", "--plot", &s(&plot)]);
    assert!(schedule.status.success(), "{}", text(&schedule));
    assert!(text(&schedule).contains("log10 SNR") && plot.is_file(), "{}", text(&schedule));
}

/// The samples of a seed do not depend on how many are drawn at once.
#[test]
fn sampling_in_batches_gives_the_same_images() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (out, batch) in [(&a, "5"), (&b, "2")] {
        std::fs::create_dir(out).unwrap();
        let r = vdm(&[
            "sample",
            "--checkpoint",
            &run,
            "--n",
            "5",
            "--steps",
            "3",
            "--batch-size",
            batch,
            "--out",
            &s(&out.join("grid.png")),
            "--out-dir",
            &s(&out.join("each")),
        ]);
        assert!(r.status.success(), "{}", text(&r));
    }
    for i in 0..5 {
        let name = format!("each/sample-{i:06}.png");
        assert_eq!(std::fs::read(a.join(&name)).unwrap(), std::fs::read(b.join(&name)).unwrap(), "{name}");
    }
}

#[test]
fn the_documented_config_parses_back_and_every_data_example_parses() {
    let out = vdm(&["config"]);
    assert!(out.status.success());
    let template = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &template);
    let schedule = vdm(&["schedule", "--config", &path, "--points", "2"]);
    assert!(schedule.status.success(), "{}", text(&schedule));
    // Each commented example block, uncommented, replaces its table and parses.
    let config = template[..template.find("# Other data sources").unwrap()].to_string();
    for (table, at_least) in [("[data]", 3), ("[model.schedule]", 3)] {
        let start = config.find(&format!("\n{table}\n")).unwrap();
        let end = start + 1 + config[start + 1..].find("\n[").unwrap();
        let (before, after) = (&config[..start], &config[end..]);
        let blocks: Vec<String> = template
            .split("\n\n")
            .filter(|b| b.contains(&format!("# {table}")))
            .map(|b| {
                b.lines()
                    .map(|l| l.strip_prefix("# ").unwrap_or(l))
                    .filter(|l| !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        assert!(blocks.len() >= at_least, "{table}: {template}");
        for block in blocks {
            let path = write_config(dir.path(), &format!("{before}\n{block}\n{after}"));
            let out = vdm(&["schedule", "--config", &path, "--points", "2"]);
            assert!(out.status.success(), "{block}\n{}", text(&out));
        }
    }
}

/// compress → decompress gives the same images back as PNGs, whether the input was the test set
/// or PNG files; a damaged file, another checkpoint and another T are refused with a reason.
#[test]
fn compress_and_decompress_round_trip_and_refuse_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    let file = dir.path().join("digits.vbb");
    let out = vdm(&["compress", "--checkpoint", &run, "--steps", "4", "--test-set", "--limit", "5", "-o", &s(&file)]);
    assert!(out.status.success(), "{}", text(&out));
    for expected in
        ["5 images, 320 values, T = 4", "bpd effective", "bpd used", "PNG files", "gzip -9", "per-pixel categorical"]
    {
        assert!(text(&out).contains(expected), "`{expected}` missing from:\n{}", text(&out));
    }
    let decoded = dir.path().join("decoded");
    let out = vdm(&["decompress", &s(&file), "--checkpoint", &run, "--steps", "4", "-o", &s(&decoded)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("decoded 5 images of [1, 8, 8] (checksum verified)"), "{}", text(&out));

    // The decoded PNGs compress to the same file as the test set they came from.
    let pngs: Vec<String> = (0..5).map(|i| s(&decoded.join(format!("{i:06}.png")))).collect();
    let again = dir.path().join("again.vbb");
    let mut args = vec!["compress", "--checkpoint", &run, "--steps", "4", "-o"];
    let again_s = s(&again);
    args.push(&again_s);
    args.extend(pngs.iter().map(String::as_str));
    let out = vdm(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&file).unwrap());

    let fresh = |name: &str| s(&dir.path().join(name));
    // A PNG of another size is refused by name before anything is coded or written.
    let big = dir.path().join("big.png");
    let mut encoder = png::Encoder::new(std::fs::File::create(&big).unwrap(), 16, 16);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.write_header().unwrap().write_image_data(&[7; 256]).unwrap();
    let refused = fresh("refused.vbb");
    assert_fails_with(
        &vdm(&["compress", "--checkpoint", &run, "--steps", "4", "-o", &refused, &pngs[0], &s(&big)]),
        &["big.png: an image of [1, 16, 16]; the model takes [1, 8, 8]"],
    );
    assert!(!std::path::Path::new(&refused).exists());
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated.vbb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(&vdm(&["decompress", &s(&truncated), "--checkpoint", &run, "-o", &fresh("t")]), &["truncated"]);
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let corrupt = dir.path().join("corrupt.vbb");
    std::fs::write(&corrupt, &flipped).unwrap();
    assert_fails_with(&vdm(&["decompress", &s(&corrupt), "--checkpoint", &run, "-o", &fresh("c")]), &["corrupt"]);
    assert_fails_with(
        &vdm(&["decompress", &s(&file), "--checkpoint", &run, "--steps", "5", "-o", &fresh("w")]),
        &["T = 4", "not 5"],
    );
    let other = dir.path().join("other");
    let config = write_config(dir.path(), &TINY.replace("warmup_steps = 2", "warmup_steps = 2\nseed = 7"));
    assert!(vdm(&["train", "--config", &config, "--run", &s(&other)]).status.success());
    assert_fails_with(
        &vdm(&["decompress", &s(&file), "--checkpoint", &s(&other), "-o", &fresh("o")]),
        &["needs the checkpoint of step 4", "holds no checkpoint with those weights (it holds step 4)"],
    );
    assert_fails_with(
        &vdm(&["decompress", &s(&file), "--checkpoint", &s(&other.join("step-0000004")), "-o", &fresh("p")]),
        &["another model, the checkpoint of step 4"],
    );
}

/// A DDPM run through every command: train, evaluate (estimate and full bound), compress and
/// decompress over its T, sample with both samplers, and measure sample quality with a freshly trained classifier; VDM-only commands refuse it.
#[test]
fn ddpm_train_eval_sample_and_fid() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &tiny_ddpm());
    let run = s(&dir.path().join("run"));
    let out = vdm(&["train", "--config", &config, "--run", &run]);
    assert!(out.status.success() && text(&out).contains("DDPM"), "{}", text(&out));
    let json = s(&dir.path().join("eval.json"));
    let out = vdm(&["eval", "--checkpoint", &run, "--draws", "2", "--full-bound", "--json", &json]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (estimate, full) = (report["bounds"][0]["bpd"].as_f64().unwrap(), report["bounds"][1]["bpd"].as_f64().unwrap());
    assert!(estimate.is_finite() && full.is_finite() && full > 0.0, "{report}");
    let file = s(&dir.path().join("ddpm.vbb"));
    let out = vdm(&["compress", "--checkpoint", &run, "--test-set", "--limit", "3", "-o", &file]);
    assert!(out.status.success() && text(&out).contains("3 images, 192 values, T = 10"), "{}", text(&out));
    let out = vdm(&["decompress", &file, "-o", &s(&dir.path().join("decoded"))]);
    assert!(
        out.status.success() && text(&out).contains("decoded 3 images of [1, 8, 8] (checksum verified)"),
        "{}",
        text(&out)
    );
    assert_fails_with(
        &vdm(&["compress", "--checkpoint", &run, "--test-set", "--steps", "5", "-o", &s(&dir.path().join("5.vbb"))]),
        &["all its T = 10 steps"],
    );
    for (i, (args, nfe)) in [
        (&["--steps", "10"][..], 10),
        (&["--sampler", "ddim", "--steps", "3"], 3),
        (&["--sampler", "dpm-solver-3m", "--steps", "4", "--spacing", "log-snr"], 4),
        (&["--sampler", "heun", "--steps", "3", "--spacing", "karras"], 5),
    ]
    .into_iter()
    .enumerate()
    {
        let grid = s(&dir.path().join(format!("s{i}.png")));
        let out = vdm(&[&["sample", "--checkpoint", &run, "--n", "4", "--out", &grid][..], args].concat());
        let said = format!("{nfe} network evaluations per image");
        assert!(out.status.success() && text(&out).contains(&said), "{args:?}: {}", text(&out));
    }
    assert_fails_with(
        &vdm(&[
            "sample",
            "--checkpoint",
            &run,
            "--sampler",
            "heun",
            "--eta",
            "0.5",
            "--out",
            &s(&dir.path().join("e.png")),
        ]),
        &["--eta is DDIM's"],
    );
    assert_fails_with(
        &vdm(&["sample", "--checkpoint", &run, "--steps", "5", "--out", &s(&dir.path().join("t.png"))]),
        &["all T = 10 steps"],
    );
    assert_fails_with(&vdm(&["schedule", "--checkpoint", &run]), &["this run is a DDPM, not a VDM"]);
    assert_fails_with(
        &vdm(&["eval", "--checkpoint", &run, "--time-steps", "100"]),
        &["--time-steps applies to VDM runs", "model.time_steps = 10"],
    );
    let classifier = s(&dir.path().join("classifier"));
    let out = vdm(&["classifier", "train", "--out", &classifier, "--steps", "20"]);
    assert!(out.status.success() && text(&out).contains("test accuracy"), "{}", text(&out));
    let fid_json = s(&dir.path().join("fid.json"));
    let out = vdm(&[
        "fid",
        "--checkpoint",
        &run,
        "--classifier",
        &classifier,
        "--n",
        "8",
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--json",
        &fid_json,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let fid: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fid_json).unwrap()).unwrap();
    assert!(fid["metrics"]["fid"].as_f64().is_some_and(|f| f.is_finite() && f >= 0.0), "{fid}");
    assert!(text(&out).contains("cannot estimate the covariance"), "8 samples, 64 features: {}", text(&out));
    // Training images as the samples: more than there are is said, not silently capped.
    let out = vdm(&["fid", "--classifier", &classifier, "--n", "100000"]);
    assert!(out.status.success() && text(&out).contains("more than the 1500 training images"), "{}", text(&out));
}
