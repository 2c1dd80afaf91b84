//! File-level helpers shared by the v1 and v2 drivers: reading and writing interface files,
//! creating and removing cgroup directories, and parsing the kernel's text formats.
//!
//! Writes open the file without `O_CREAT`: on a real cgroupfs every interface file exists
//! as soon as the directory does, and a missing file means the controller is absent. Tests
//! therefore build their fake trees with the files already in place.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::CgroupError;

/// Reads a whole interface file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Reads a file that may legitimately be absent (controller or feature not present).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

/// Writes `value` into an existing interface file.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let to_err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(to_err)?;
    // One write call: the kernel parses each write(2) as one value.
    file.write_all(value.as_bytes()).map_err(to_err)
}

/// Writes a value the caller asked for: a missing file becomes
/// [`CgroupError::Unsupported`] naming the file and the setting.
pub(crate) fn write_requested(
    dir: &Path,
    file: &str,
    value: &str,
    what: &str,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(CgroupError::Unsupported {
            what: what.to_string(),
            file: path,
        });
    }
    log::debug!("cgroup: {what}: {} <- {value:?}", path.display());
    write(&path, value)
}

/// Fails with a not-found I/O error when the cgroup directory is gone.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), CgroupError> {
    fs::metadata(dir)
        .map(|_| ())
        .map_err(|e| CgroupError::io("open cgroup", dir, e))
}

/// Creates `root/rel` one level at a time, appending every level it made (outermost first)
/// to `created`. Existing levels are left alone.
pub(crate) fn mkdir_levels(
    root: &Path,
    rel: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    for comp in rel.iter() {
        dir.push(comp);
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::io("create directory", &dir, e)),
        }
    }
    Ok(())
}

/// Removes one cgroup directory, retrying on `EBUSY` for about a second (the kernel
/// keeps a cgroup busy for a moment after its last process died). A missing directory is
/// success.
///
/// `emulated` is true only for fake trees (tests): there the "interface files" are
/// ordinary files that `rmdir` would refuse to remove, so they are deleted first. Child
/// directories are never touched, so a fake cgroup with children fails like a real one.
pub(crate) fn remove_dir(dir: &Path, emulated: bool) -> Result<(), CgroupError> {
    if emulated {
        remove_plain_files(dir)?;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_millis(10);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(CgroupError::io("remove cgroup", dir, e)),
        }
    }
}

fn remove_plain_files(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list", dir, e))?;
        let path = entry.path();
        let is_file = entry
            .file_type()
            .map_err(|e| CgroupError::io("stat", &path, e))?
            .is_file();
        if is_file {
            fs::remove_file(&path).map_err(|e| CgroupError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// Parses one number; `max` (unlimited) becomes `u64::MAX`.
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse()
        .map_err(|_| parse_err(path, format!("{t:?} is not a number")))
}

/// Reads one number from a file that may be absent (absent reads as `None`).
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?.map(|t| parse_u64(path, &t)).transpose()
}

/// Reads one number from a file that may be absent; absent reads as 0.
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64, CgroupError> {
    Ok(read_u64_opt(path)?.unwrap_or(0))
}

/// Parses "flat keyed" files (`memory.stat`, `cpu.stat`, `memory.events`...): one
/// `key value` pair per line. Lines whose value is not a number are skipped (some kernels
/// add such lines); a line without a value is an error.
pub(crate) fn parse_flat_keyed(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, u64>, CgroupError> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            return Err(parse_err(path, format!("line {line:?} has no value")));
        };
        if let Ok(v) = value.parse::<u64>() {
            map.insert(key.to_string(), v);
        }
    }
    Ok(map)
}

/// Reads a flat keyed file that may be absent (absent reads as an empty map).
pub(crate) fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    match read_opt(path)? {
        Some(text) => parse_flat_keyed(path, &text),
        None => Ok(BTreeMap::new()),
    }
}

/// Parses a `major:minor` device number.
pub(crate) fn parse_dev(path: &Path, text: &str) -> Result<(u64, u64), CgroupError> {
    let bad = || parse_err(path, format!("{text:?} is not a major:minor device"));
    let (major, minor) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

pub(crate) fn parse_err(path: &Path, reason: String) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_parsing_keeps_numbers_and_rejects_lone_keys() {
        let p = Path::new("memory.stat");
        let map = parse_flat_keyed(p, "cache 10\nrss 20\n\nweird x\n").unwrap();
        assert_eq!(map.get("cache"), Some(&10));
        assert_eq!(map.get("rss"), Some(&20));
        assert!(!map.contains_key("weird"));
        assert!(parse_flat_keyed(p, "lonely\n").is_err());
    }

    #[test]
    fn numbers_and_devices() {
        let p = Path::new("f");
        assert_eq!(parse_u64(p, "max\n").unwrap(), u64::MAX);
        assert_eq!(parse_u64(p, " 42\n").unwrap(), 42);
        assert!(parse_u64(p, "-1").is_err());
        assert_eq!(parse_dev(p, "8:16").unwrap(), (8, 16));
        assert!(parse_dev(p, "8").is_err());
    }

    #[test]
    fn write_never_creates_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("pids.max");
        let err = write(&missing, "5").unwrap_err();
        assert!(err.is_not_found());
        assert!(!missing.exists());
        let err = write_requested(dir.path(), "pids.max", "5", "pids limit").unwrap_err();
        assert!(err.to_string().contains("pids.max"), "{err}");
        fs::write(&missing, "max").unwrap();
        write(&missing, "5").unwrap();
        assert_eq!(fs::read_to_string(&missing).unwrap(), "5");
    }

    #[test]
    fn remove_dir_is_idempotent_and_spares_children() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cg");
        fs::create_dir_all(cg.join("child")).unwrap();
        fs::write(cg.join("cgroup.procs"), "").unwrap();
        assert!(remove_dir(&cg, true).is_err());
        assert!(cg.join("child").exists());
        fs::remove_dir(cg.join("child")).unwrap();
        remove_dir(&cg, true).unwrap();
        assert!(!cg.exists());
        remove_dir(&cg, true).unwrap();
    }
}
