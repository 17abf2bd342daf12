//! Checkpoints on disk: crash-safe saving, finding a run's newest checkpoint, verified loading.
//!
//! A run directory holds `config.toml`, `metrics.jsonl`, a `latest` file and checkpoints
//! `step-NNNNNNN/` (a second save at the same step gets `step-NNNNNNN-2/`, and so on). Each
//! checkpoint holds weight files (`model.mpk`, `ema.mpk`, `optim.mpk`) and `state.json`: the step,
//! the run's configuration, the image shape, and every weight file's size and SHA-256.
//!
//! **Crash safety.** A checkpoint directory is never modified once it has its final name. [`save`]
//! writes everything into `.step-NNNNNNN.tmp/`, flushes every file and the directory to disk,
//! renames the directory into place, then replaces `latest` (write, flush, rename), and only then
//! deletes checkpoints beyond the number to keep. A crash at any instant therefore leaves the
//! previous checkpoint intact, and at most a temporary directory that the next save removes.
//! [`Checkpoint::open`] takes a run's newest complete checkpoint whatever `latest` says (a missing,
//! empty or stale `latest` is reported, never mistaken for an empty run). A failed save (a full disk, say)
//! removes its temporary directory and reports which checkpoint is still intact.
//!
//! **Kept checkpoints.** A checkpoint holding a [`KEEP`] file is never removed by [`save`]: `vdm
//! compress` writes one into the checkpoint it coded with ([`keep`]), listing the compressed
//! files, since decoding them needs exactly those weights. It is the one file ever added to a
//! checkpoint after its save; deleting it lets the next save prune the checkpoint again.
//!
//! **Verified loading.** Every file is checked against the size and digest in `state.json`, and
//! every weight file against the architecture `state.json` describes (every parameter's name and
//! shape), so a truncated, corrupt or mismatched file is reported by name instead of failing later.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{describe_io, Error, Result};
use crate::files::{read_verified, sync_dir, write_atomically, write_durably, FileDigest};

/// The version of the checkpoint layout this build reads and writes.
pub const FORMAT: u32 = 2;

/// The name of the file that names a run's newest checkpoint.
pub const LATEST: &str = "latest";

/// The file that keeps a checkpoint from being pruned: one line per reason (see the module docs).
pub const KEEP: &str = "keep";

/// The in-memory recorder of every weight file: named MessagePack at full precision.
pub type Recording = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// A checkpoint's `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// [`FORMAT`] of the build that wrote it.
    pub format: u32,
    /// Optimisation steps taken.
    pub step: usize,
    /// `[channels, height, width]` of the images the model was trained on.
    pub image_shape: [usize; 3],
    /// The run (data, model, optimisation, evaluation).
    pub run: RunConfig,
    /// Every weight file of the checkpoint, by name.
    pub files: BTreeMap<String, FileDigest>,
}

/// A checkpoint found on disk, with its state read and checked.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `state.json`.
    pub state: CheckpointState,
    /// Set when the run directory's `latest` did not name this, its newest complete checkpoint;
    /// says what was wrong with `latest`.
    pub recovered: Option<String>,
}

impl Checkpoint {
    /// The checkpoint at `path`: a checkpoint directory itself (holding `state.json`), or a run
    /// directory, whose newest complete checkpoint is taken (see the module docs).
    pub fn open(path: &Path) -> Result<Self> {
        if path.join("state.json").is_file() {
            return Self::read(path);
        }
        if !path.is_dir() {
            return Err(Error::file(path, "does not exist or is not a directory"));
        }
        let mut candidates = checkpoint_dirs(path)?;
        candidates.sort();
        let mut problems = Vec::new();
        for (_, dir) in candidates.into_iter().rev() {
            match Self::read(&dir) {
                Ok(mut ckpt) => {
                    ckpt.recovered = latest_problem(path, &dir);
                    return Ok(ckpt);
                }
                Err(e) => problems.push(e),
            }
        }
        Err(match problems.is_empty() {
            true => Error::file(path, "holds no checkpoint (no step-* directory)"),
            false => {
                let problems: Vec<String> = problems.iter().map(Error::to_string).collect();
                Error::file(path, format!("holds no usable checkpoint: {}", problems.join("; ")))
            }
        })
    }

    /// Every complete checkpoint of the run directory `run_dir`, oldest first (damaged ones are
    /// skipped: [`Checkpoint::open`] reports them).
    pub fn all(run_dir: &Path) -> Result<Vec<Self>> {
        let mut found = checkpoint_dirs(run_dir)?;
        found.sort();
        Ok(found.into_iter().filter_map(|(_, dir)| Self::read(&dir).ok()).collect())
    }

    fn read(dir: &Path) -> Result<Self> {
        let file = dir.join("state.json");
        let text = fs::read_to_string(&file).map_err(|e| Error::io(&file, &e))?;
        // Check the format before the rest, so an old or newer layout gets the right message.
        #[derive(Deserialize)]
        struct Format {
            format: Option<u32>,
        }
        let format = serde_json::from_str::<Format>(&text)
            .map_err(|e| Error::file(&file, format!("not a checkpoint state file: {e}")))?
            .format;
        if format != Some(FORMAT) {
            let found = format.map_or("an earlier vdm (no format number)".to_string(), |f| format!("format {f}"));
            return Err(Error::file(
                &file,
                format!("was written by {found}; this vdm reads checkpoint format {FORMAT}"),
            ));
        }
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| Error::file(&file, format!("malformed checkpoint state: {e}")))?;
        state.run.validate().map_err(|e| Error::file(&file, format!("{e}")))?;
        for name in state.files.keys() {
            if !is_plain_name(name) {
                return Err(Error::file(&file, format!("`{name}` is not a file name")));
            }
        }
        Ok(Self { dir: dir.to_owned(), state, recovered: None })
    }

    /// The bytes of weight file `name`, checked against its size and digest in `state.json`.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        let expected = self
            .state
            .files
            .get(name)
            .ok_or_else(|| Error::file(&self.dir, format!("state.json lists no file `{name}`")))?;
        read_verified(&path, expected, "state.json")
    }

    /// Loads weight file `name` into `template`, a freshly initialised module of the architecture
    /// in `state.json`, after checking that the file holds exactly that architecture's parameters.
    pub fn load_module<B: Backend, M: Module<B>>(&self, name: &str, template: M, device: &B::Device) -> Result<M> {
        let path = self.dir.join(name);
        let data = self.read_file(name)?;
        // burn's loader panics or silently drops parameters when the record and the module
        // disagree, so compare their structure (names, counts, shapes) first.
        let expected = encode_module(template.clone())?;
        let decode = |bytes: &[u8]| rmpv::decode::read_value(&mut &bytes[..]);
        let found_tree = decode(&data).map_err(|e| Error::file(&path, format!("not a weight file ({e})")))?;
        let expected_tree =
            decode(&expected).map_err(|e| Error::Corrupt(format!("re-reading an encoded model: {e}")))?;
        if let Some(problem) = structure_mismatch(&expected_tree, &found_tree, &mut Vec::new()) {
            return Err(Error::file(&path, format!("does not hold the weights of the model in state.json: {problem}")));
        }
        let record: M::Record = Recorder::<B>::load(&Recording::new(), data, device)
            .map_err(|e| Error::file(&path, format!("cannot be decoded ({e})")))?;
        Ok(template.load_record(record))
    }

    /// Decodes weight file `name` as a record of another kind (the optimiser's state).
    pub fn load_record<B: Backend, R: burn::record::Record<B>>(&self, name: &str, device: &B::Device) -> Result<R> {
        let data = self.read_file(name)?;
        Recorder::<B>::load(&Recording::new(), data, device)
            .map_err(|e| Error::file(&self.dir.join(name), format!("cannot be decoded ({e})")))
    }
}

/// A module's weights as the bytes of a weight file.
pub fn encode_module<B: Backend, M: Module<B>>(module: M) -> Result<Vec<u8>> {
    encode_record::<B, _>(module.into_record())
}

/// A record (a module's or an optimiser's) as the bytes of a weight file.
pub fn encode_record<B: Backend, R: burn::record::Record<B>>(record: R) -> Result<Vec<u8>> {
    Recorder::<B>::record(&Recording::new(), record, ()).map_err(|e| Error::Corrupt(format!("encoding weights: {e}")))
}

/// Where two encoded records differ in structure: map keys, list lengths, tensor shapes and
/// byte lengths must agree; the values of strings (parameter ids) and floats may differ.
fn structure_mismatch(expected: &rmpv::Value, found: &rmpv::Value, path: &mut Vec<String>) -> Option<String> {
    use rmpv::Value;
    // The module path of the parameter, without the record's own wrapping (`item`, `param`, ...).
    let here = |path: &[String]| {
        let named: Vec<&str> = path
            .iter()
            .map(String::as_str)
            .filter(|p| !matches!(*p, "item" | "param" | "bytes" | "shape" | "dtype" | "id"))
            .collect();
        if named.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{}`", named.join("."))
        }
    };
    match (expected, found) {
        (Value::Map(a), Value::Map(b)) => {
            let key = |k: &Value| k.as_str().map_or_else(|| k.to_string(), str::to_owned);
            // A tensor's shape explains a mismatch better than its byte count: compare it first.
            let mut ordered: Vec<&(Value, Value)> = a.iter().collect();
            ordered.sort_by_key(|(k, _)| k.as_str() != Some("shape"));
            for (k, va) in ordered {
                let Some((_, vb)) = b.iter().find(|(kb, _)| kb == k) else {
                    return Some(format!("{} is missing `{}`", here(path), key(k)));
                };
                path.push(key(k));
                let problem = structure_mismatch(va, vb, path);
                path.pop();
                if problem.is_some() {
                    return problem;
                }
            }
            b.iter()
                .find(|(k, _)| !a.iter().any(|(ka, _)| ka == k))
                .map(|(k, _)| format!("{} has `{}`, which the model lacks", here(path), key(k)))
        }
        (Value::Array(a), Value::Array(b)) if path.last().is_some_and(|p| p == "shape") => {
            (a != b).then(|| format!("parameter {} has shape {}, but the model needs {}", here(path), found, expected))
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                let entries = if b.len() == 1 { "entry" } else { "entries" };
                return Some(format!("{} has {} {entries}, but the model has {}", here(path), b.len(), a.len()));
            }
            a.iter().zip(b).enumerate().find_map(|(i, (va, vb))| {
                path.push(i.to_string());
                let problem = structure_mismatch(va, vb, path);
                path.pop();
                problem
            })
        }
        (Value::Binary(a), Value::Binary(b)) => (a.len() != b.len())
            .then(|| format!("{} holds {} bytes, but the model needs {}", here(path), b.len(), a.len())),
        (Value::String(_), Value::String(_)) | (Value::F32(_), Value::F32(_)) | (Value::F64(_), Value::F64(_)) => None,
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => {
            (a != b).then(|| format!("{} is {b}, but the model has {a}", here(path)))
        }
        _ => Some(format!("{} is {found}, where the model has {expected}", here(path))),
    }
}

/// `step-NNNNNNN` or `step-NNNNNNN-K`: `(step, K)`, with `K = 1` for the first.
fn parse_checkpoint_name(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("step-")?;
    let (step, copy) = match rest.split_once('-') {
        Some((s, k)) => (s, k.parse().ok()?),
        None => (rest, 1),
    };
    (step.len() >= 7 && step.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
    Some((step.parse().ok()?, copy))
}

/// What is wrong with `run_dir/latest` as a pointer to `newest`, if anything.
fn latest_problem(run_dir: &Path, newest: &Path) -> Option<String> {
    let latest = run_dir.join(LATEST);
    match fs::read_to_string(&latest) {
        Ok(name) if run_dir.join(name.trim()) == newest => None,
        Ok(name) if name.trim().is_empty() => Some(format!("{} is empty", latest.display())),
        Ok(name) => Some(format!("{} names `{}`, not the newest complete checkpoint", latest.display(), name.trim())),
        Err(e) => Some(Error::io(&latest, &e).to_string()),
    }
}

/// A checkpoint directory and its `(step, copy)`, which orders checkpoints oldest first.
type Found = ((usize, usize), PathBuf);

/// The checkpoint directories of a run.
fn checkpoint_dirs(run_dir: &Path) -> Result<Vec<Found>> {
    let entries = fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, &e))?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let key = parse_checkpoint_name(&entry.file_name().to_string_lossy())?;
            entry.path().is_dir().then(|| (key, entry.path()))
        })
        .collect())
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// The checkpoints (and `latest`) a run directory holds, for deciding whether a new run may start
/// there. A directory with only the `config.toml` and `metrics.jsonl` of a run that stopped before
/// its first checkpoint holds nothing to resume, and a new run may take it over.
pub fn describe_existing_run(run_dir: &Path) -> Option<String> {
    let entries = fs::read_dir(run_dir).ok()?;
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name == LATEST || parse_checkpoint_name(name).is_some())
        .collect();
    found.sort();
    (!found.is_empty()).then(|| found.join(", "))
}

/// Writes a new checkpoint of `step` into `run_dir` crash-safely (see the module docs), points
/// `latest` at it and then removes all but the newest `keep` checkpoints, not counting those
/// holding a [`KEEP`] file, which stay. `files` are the weight
/// files by name; their digests go into `state.json`. Returns the new checkpoint's directory.
pub fn save(
    run_dir: &Path,
    step: usize,
    image_shape: [usize; 3],
    run: &RunConfig,
    files: &[(&str, Vec<u8>)],
    keep: usize,
) -> Result<PathBuf> {
    fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, &e))?;
    let existing = checkpoint_dirs(run_dir)?;
    let copy = existing.iter().filter(|((s, _), _)| *s == step).map(|((_, k), _)| k + 1).max().unwrap_or(1);
    let name = if copy == 1 { format!("step-{step:07}") } else { format!("step-{step:07}-{copy}") };
    let final_dir = run_dir.join(&name);
    let tmp_dir = run_dir.join(format!(".{name}.tmp"));
    remove_stale_temporaries(run_dir);

    let state = CheckpointState {
        format: FORMAT,
        step,
        image_shape,
        run: run.clone(),
        files: files.iter().map(|(n, data)| (n.to_string(), FileDigest::of(data))).collect(),
    };
    let written = (|| -> io::Result<()> {
        fs::create_dir(&tmp_dir)?;
        for (file, data) in files {
            write_durably(&tmp_dir.join(file), data)?;
        }
        let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
        write_durably(&tmp_dir.join("state.json"), &json)?;
        sync_dir(&tmp_dir)?;
        fs::rename(&tmp_dir, &final_dir)?;
        sync_dir(run_dir)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp_dir);
        let intact = existing
            .iter()
            .max_by_key(|(key, _)| *key)
            .map_or("no earlier checkpoint exists".to_string(), |(_, d)| format!("{} is intact", d.display()));
        let needed: u64 = state.files.values().map(|f| f.bytes).sum();
        return Err(Error::file(
            &final_dir,
            format!(
                "writing the checkpoint ({:.1} MB): {}; nothing was left behind, and {intact}",
                needed as f64 / 1e6,
                describe_io(&e)
            ),
        ));
    }
    write_atomically(&run_dir.join(LATEST), name.as_bytes()).map_err(|e| Error::io(&run_dir.join(LATEST), &e))?;
    let mut older: Vec<_> = checkpoint_dirs(run_dir)?
        .into_iter()
        .filter(|(_, dir)| *dir != final_dir && !dir.join(KEEP).exists())
        .collect();
    older.sort();
    let surplus = (older.len() + 1).saturating_sub(keep.max(1));
    for (_, dir) in older.into_iter().take(surplus) {
        fs::remove_dir_all(&dir)
            .map_err(|e| Error::file(&dir, format!("removing this older checkpoint: {}", describe_io(&e))))?;
    }
    Ok(final_dir)
}

/// Keeps the checkpoint `dir` from being pruned by later saves, appending `reason` (one line) to
/// its [`KEEP`] file durably. Fails if the checkpoint is gone (a run pruned it meanwhile).
pub fn keep(dir: &Path, reason: &str) -> Result<()> {
    let path = dir.join(KEEP);
    if !dir.join("state.json").is_file() {
        return Err(Error::file(dir, "is no longer a checkpoint (a training run may have pruned it)"));
    }
    let mut file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, &e))?;
    writeln!(file, "{}", reason.replace('\n', " ")).and_then(|()| file.sync_all()).map_err(|e| Error::io(&path, &e))?;
    sync_dir(dir).map_err(|e| Error::io(dir, &e))
}

/// Removes `.step-*.tmp` directories left by a save that was killed.
fn remove_stale_temporaries(run_dir: &Path) {
    if let Ok(entries) = fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".step-") && name.ends_with(".tmp") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_parse_with_their_copy_number() {
        assert_eq!(parse_checkpoint_name("step-0001500"), Some((1500, 1)));
        assert_eq!(parse_checkpoint_name("step-0001500-3"), Some((1500, 3)));
        assert_eq!(parse_checkpoint_name("step-12345678"), Some((12_345_678, 1)));
        for bad in ["step-15", "step-00015x0", ".step-0001500.tmp", "latest", "step-0001500-x"] {
            assert_eq!(parse_checkpoint_name(bad), None, "{bad}");
        }
    }
}
