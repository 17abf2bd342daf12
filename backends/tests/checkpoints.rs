//! Checkpoints: what a crash at any instant leaves is usable, nothing is deleted that should not
//! be, and every damaged or mismatched file is reported by name.

mod common;

use std::fs;
use std::path::Path;

use common::{parameters, tiny_run, B};
use vdm_backends::checkpoint::{keep, Checkpoint, KEEP};
use vdm_backends::model::Vdm;
use vdm_backends::train::{load_ema, Trainer};
use vdm_backends::Cpu;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A trainer after `steps` steps, saved once into `dir`.
fn saved_run(dir: &Path, steps: usize) -> Trainer<B> {
    let run = tiny_run(10);
    let (train, _) = run.data.load(0).unwrap();
    let mut trainer = Trainer::<B>::new(&run, train.shape(), &Default::default()).unwrap();
    for _ in 0..steps {
        trainer.train_step(&train).unwrap();
    }
    trainer.save(dir).unwrap();
    trainer
}

#[test]
fn saving_replaces_older_checkpoints_only_after_the_new_one_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = saved_run(dir.path(), 2);
    let (train, _) = trainer.run_config().data.load(0).unwrap();
    trainer.train_step(&train).unwrap();
    let saved = trainer.save(dir.path()).unwrap();
    assert_eq!(names(dir.path()), ["latest", "step-0000003"], "the older checkpoint goes, no temporary remains");
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!((ckpt.dir.clone(), ckpt.state.step, ckpt.recovered.clone()), (saved, 3, None));
    assert_eq!(ckpt.state.run, *trainer.run_config());
    assert_eq!(parameters(&load_ema::<Cpu, Vdm<Cpu>>(&ckpt, &Default::default()).unwrap()), parameters(trainer.ema()));

    // A second save at the same step (Ctrl-C right after a periodic save) writes a new copy and
    // never touches the complete one until the new one is in place.
    let again = trainer.save(dir.path()).unwrap();
    assert!(again.ends_with("step-0000003-2"), "{}", again.display());
    assert_eq!(names(dir.path()), ["latest", "step-0000003-2"]);
}

#[test]
fn keep_checkpoints_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = tiny_run(10);
    run.keep_checkpoints = 2;
    let (train, _) = run.data.load(0).unwrap();
    let mut trainer = Trainer::<B>::new(&run, train.shape(), &Default::default()).unwrap();
    for _ in 0..3 {
        trainer.train_step(&train).unwrap();
        trainer.save(dir.path()).unwrap();
    }
    assert_eq!(names(dir.path()), ["latest", "step-0000002", "step-0000003"]);
}

/// A checkpoint holding a `keep` file (what `vdm compress` writes) outlives keep_checkpoints; all
/// complete checkpoints are listed oldest first; and keeping one that is gone is an error.
#[test]
fn kept_checkpoints_are_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = saved_run(dir.path(), 1);
    keep(&dir.path().join("step-0000001"), "compressed file /x.vbb").unwrap();
    keep(&dir.path().join("step-0000001"), "compressed file /y.vbb").unwrap();
    let (train, _) = trainer.run_config().data.load(0).unwrap();
    for _ in 0..2 {
        trainer.train_step(&train).unwrap();
        trainer.save(dir.path()).unwrap();
    }
    assert_eq!(names(dir.path()), ["latest", "step-0000001", "step-0000003"]);
    let kept = fs::read_to_string(dir.path().join("step-0000001").join(KEEP)).unwrap();
    assert_eq!(kept, "compressed file /x.vbb\ncompressed file /y.vbb\n");
    let steps: Vec<usize> = Checkpoint::all(dir.path()).unwrap().iter().map(|c| c.state.step).collect();
    assert_eq!(steps, [1, 3]);
    let err = keep(&dir.path().join("step-0000002"), "x").unwrap_err().to_string();
    assert!(err.contains("step-0000002") && err.contains("no longer a checkpoint"), "{err}");
}

/// `latest` missing, empty or naming something gone: the newest complete checkpoint is used,
/// and the problem is reported.
#[test]
fn a_missing_empty_or_stale_latest_never_hides_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    saved_run(dir.path(), 2);
    let latest = dir.path().join("latest");
    for (content, problem) in [(None, "latest"), (Some(""), "is empty"), (Some("step-0000001"), "names `step-0000001`")]
    {
        match content {
            None => fs::remove_file(&latest).unwrap_or(()),
            Some(text) => fs::write(&latest, text).unwrap(),
        }
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.state.step, 2);
        let note = ckpt.recovered.expect("the problem with `latest` is reported");
        assert!(note.contains(problem), "{note}");
    }
}

/// What a save killed at any instant leaves: a partial temporary directory, which is ignored
/// and removed by the next save.
#[test]
fn a_save_killed_midway_leaves_the_previous_checkpoint_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = saved_run(dir.path(), 2);
    let partial = dir.path().join(".step-0000003.tmp");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("model.mpk"), b"half a file").unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!((ckpt.state.step, ckpt.recovered), (2, None));

    let (train, _) = trainer.run_config().data.load(0).unwrap();
    trainer.train_step(&train).unwrap();
    trainer.save(dir.path()).unwrap();
    assert_eq!(names(dir.path()), ["latest", "step-0000003"]);
}

/// A save that fails (here: the final name is taken by a file) removes what it wrote and says
/// which checkpoint is intact.
#[test]
fn a_failed_save_cleans_up_and_names_the_intact_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = saved_run(dir.path(), 2);
    let (train, _) = trainer.run_config().data.load(0).unwrap();
    trainer.train_step(&train).unwrap();
    fs::write(dir.path().join("step-0000003"), b"in the way").unwrap();
    let err = trainer.save(dir.path()).unwrap_err().to_string();
    assert!(err.contains("step-0000002 is intact"), "{err}");
    assert_eq!(names(dir.path()), ["latest", "step-0000002", "step-0000003"], "no temporary directory is left");
    assert_eq!(Checkpoint::open(dir.path()).unwrap().state.step, 2);
}

/// Truncated, corrupted, missing and mismatched files are each reported with the file's name.
#[test]
fn damaged_checkpoints_are_reported_by_file() {
    let source = tempfile::tempdir().unwrap();
    saved_run(source.path(), 1);
    let ckpt_name = "step-0000001";
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join(ckpt_name);
        fs::create_dir(&to).unwrap();
        for f in names(&source.path().join(ckpt_name)) {
            fs::copy(source.path().join(ckpt_name).join(&f), to.join(&f)).unwrap();
        }
        (dir, to)
    };
    let load =
        |dir: &Path| Checkpoint::open(dir).and_then(|c| load_ema::<Cpu, Vdm<Cpu>>(&c, &Default::default()).map(|_| ()));
    let state_of = |ckpt: &Path| fs::read_to_string(ckpt.join("state.json")).unwrap();

    let (dir, ckpt) = fresh();
    let bytes = fs::read(ckpt.join("ema.mpk")).unwrap();
    fs::write(ckpt.join("ema.mpk"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("ema.mpk") && err.contains("truncated"), "{err}");

    let (dir, ckpt) = fresh();
    let mut bytes = fs::read(ckpt.join("ema.mpk")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(ckpt.join("ema.mpk"), &bytes).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("ema.mpk") && err.contains("corrupt"), "{err}");

    let (dir, ckpt) = fresh();
    fs::remove_file(ckpt.join("ema.mpk")).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("ema.mpk") && err.contains("no such file"), "{err}");

    // state.json edited to another architecture: a wider network, a deeper one, a shallower one.
    for (from, to, expected) in [
        (
            "\"n_embd\": 8",
            "\"n_embd\": 12",
            "parameter `score.dense0.weight` has shape [8, 32], but the model needs [12, 48]",
        ),
        ("\"n_layer\": 1", "\"n_layer\": 2", "`score.down` has 1 entry, but the model has 2"),
        ("\"n_layer\": 1", "\"n_layer\": 0", "`score.down` has 1 entry, but the model has 0"),
    ] {
        let (dir, ckpt) = fresh();
        let state = state_of(&ckpt);
        assert!(state.contains(from), "{state}");
        fs::write(ckpt.join("state.json"), state.replace(from, to)).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ema.mpk") && err.contains(expected), "{to}: {err}");
    }

    for (content, expected) in [
        ("", "not a checkpoint state file"),
        ("{\"step\": 3}", "written by an earlier vdm"),
        ("{\"format\": 2, \"step\": 1}", "malformed"),
    ] {
        let (dir, ckpt) = fresh();
        fs::write(ckpt.join("state.json"), content).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains(expected), "{content:?}: {err}");
    }

    let empty = tempfile::tempdir().unwrap();
    let err = load(empty.path()).unwrap_err().to_string();
    assert!(err.contains("holds no checkpoint"), "{err}");
    let err = load(&empty.path().join("absent")).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
}
