//! The compiled-artifact cache: one directory, reached only through directory fds opened
//! by the init helper on the host, holding wasmtime artifacts keyed by module digest and
//! engine.
//!
//! # Layout and data flow
//!
//! ```text
//! <key>.cwasm   the artifact exactly as wasmtime's precompile produced it (mapped on load)
//! <key>.sum     "<sha256 of the artifact, hex> <length>\n"
//! .tmp-...      an entry being written (temp file, fsync, renameat into place)
//! ```
//!
//! `key` = hex sha256 of a version tag, the module bytes' sha256 and the engine's
//! compatibility digest, so a new wasmtime or a different engine configuration simply
//! misses. [`Cache::lookup`] opens `<key>.cwasm`, hashes the opened file and compares it
//! with `<key>.sum` before handing out a [`VerifiedArtifact`]: wasmtime's deserialization
//! is `unsafe` because it trusts its input, and this check is what makes it sound.
//! Entries are immutable once renamed into place (a replacement is a new inode), so the
//! inode we hashed is the inode wasmtime maps.
//!
//! Two handles on the directory: `dir` (writable) for temp files, renames, mtimes and
//! eviction, and `view` for every entry that is handed out to be mapped. The container
//! init passes a read-only detached clone of the directory as `view`, so the artifact
//! file wasmtime keeps open (and maps) is on a read-only mount: reopening it through
//! `/proc/<pid>/fd` or `/proc/<pid>/map_files` for writing fails with `EROFS`, and no
//! writable handle on an entry outlives [`Cache::store`]. [`Cache::evict`] keeps the total size of
//! entries under the bound by removing the least recently used (`mtime`, refreshed on
//! every hit by [`Cache::touch`]).
//!
//! No wasmtime call lives here; failures are [`WasmError::Cache`] values that the caller
//! logs and survives.
//!
//! # Limitations
//!
//! - The check protects against corruption (crash, disk, truncation, an old format), not
//!   against someone who can write the cache directory: they could write both files. The
//!   directory must be writable by the shim's user only.
//! - Two containers storing the same key at the same time both compile; the last rename
//!   wins. If their artifacts differed, the next lookup sees a mismatch and recompiles.
//! - The bound counts entries (`.cwasm` + `.sum`), not temp files of writers in progress;
//!   temp files and `.sum` files without an artifact are removed by eviction once they are
//!   an hour old.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

use crate::WasmError;

/// Tag mixed into every key: bump it when the entry format changes.
const FORMAT: &[u8] = b"amphi-wasm-cache-v1\0";
const ARTIFACT_EXT: &str = ".cwasm";
const SUM_EXT: &str = ".sum";
const TEMP_PREFIX: &str = ".tmp-";
/// A temp file this old belongs to a writer that died.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The cache key (64 hex digits) of `module` for an engine with `engine_digest`.
pub(crate) fn key(module: &[u8], engine_digest: &[u8; 32]) -> String {
    let module_digest = Sha256::digest(module);
    let mut hasher = Sha256::new();
    hasher.update(FORMAT);
    hasher.update(module_digest);
    hasher.update(engine_digest);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// An opened artifact whose content matched its checksum (or that we just wrote).
#[derive(Debug)]
pub(crate) struct VerifiedArtifact {
    file: File,
    name: String,
}

impl VerifiedArtifact {
    /// The opened artifact (read access), for mapping.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The entry name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The artifact's bytes, read through the verified fd (for loaders that need memory).
    pub(crate) fn read_all(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(self.file.metadata()?.len()).map_err(io::Error::other)?;
        let mut bytes = vec![0; len];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

/// What [`Cache::lookup`] found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// No entry for this key.
    Absent,
    /// An entry whose content matches its checksum.
    Found(VerifiedArtifact),
    /// An entry that must not be loaded; the reason is for the log.
    Corrupt(String),
}

/// The cache directory, the view entries are opened through, and the size bound.
pub(crate) struct Cache<'fd> {
    dir: BorrowedFd<'fd>,
    view: BorrowedFd<'fd>,
    max_bytes: u64,
}

impl<'fd> Cache<'fd> {
    /// `view` is where entries to map are opened: a read-only clone of `dir` in the
    /// container init, `dir` itself in tools and tests.
    pub(crate) fn new(dir: BorrowedFd<'fd>, view: BorrowedFd<'fd>, max_bytes: u64) -> Self {
        Cache {
            dir,
            view,
            max_bytes,
        }
    }

    /// Opens (through the view) and verifies the entry for `key`.
    pub(crate) fn lookup(&self, key: &str) -> Result<Lookup, WasmError> {
        let name = format!("{key}{ARTIFACT_EXT}");
        let file = match open_in(self.view, &name, OFlags::RDONLY) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Absent),
            Err(source) => return Err(cache_error("open", &name, source)),
        };
        let sum_name = format!("{key}{SUM_EXT}");
        let expected = match self.read_small(&sum_name) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Lookup::Corrupt(format!("{sum_name} is missing")));
            }
            Err(source) => return Err(cache_error("read", &sum_name, source)),
        };
        let actual = digest_file(&file).map_err(|source| cache_error("read", &name, source))?;
        if expected.trim_end() != sum_line(&actual.0, actual.1) {
            return Ok(Lookup::Corrupt(format!(
                "{name} does not match the checksum in {sum_name}"
            )));
        }
        Ok(Lookup::Found(VerifiedArtifact { file, name }))
    }

    /// Marks an entry as recently used (its mtime orders eviction). Best effort: a
    /// read-only cache still serves hits.
    pub(crate) fn touch(&self, artifact: &VerifiedArtifact) {
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        // By name through the writable directory: the artifact's own fd is on the view,
        // which may be read-only. A replacement renamed in between gets the new mtime,
        // which is as good.
        if let Err(err) = rustix::fs::utimensat(
            self.dir,
            artifact.name.as_str(),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            log::debug!("cannot refresh the mtime of {}: {err}", artifact.name);
        }
    }

    /// Writes the artifact for `key` atomically and returns it opened read-only through the
    /// view (the same inode that was written), ready to map. The writable fd is closed.
    pub(crate) fn store(&self, key: &str, artifact: &[u8]) -> Result<VerifiedArtifact, WasmError> {
        let name = format!("{key}{ARTIFACT_EXT}");
        let sum_name = format!("{key}{SUM_EXT}");
        let sum = format!(
            "{}\n",
            sum_line(&Sha256::digest(artifact).into(), len64(artifact))
        );
        let size = len64(artifact) + len64(sum.as_bytes());
        if size > self.max_bytes {
            let source = io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{size} bytes exceed the cache bound of {}", self.max_bytes),
            );
            return Err(cache_error("store", &name, source));
        }
        // Both files are complete on disk before either is renamed. The checksum is renamed
        // first: a reader that sees the new artifact sees its checksum too; one that sees a
        // new checksum with an old artifact recompiles (harmless).
        let (sum_file, sum_temp) = self.write_temp(key, sum.as_bytes())?;
        drop(sum_file);
        let (file, temp) = match self.write_temp(key, artifact) {
            Ok(written) => written,
            Err(err) => {
                let _ = rustix::fs::unlinkat(self.dir, sum_temp.as_str(), AtFlags::empty());
                return Err(err);
            }
        };
        if let Err(err) = self.rename_into_place(&sum_temp, &sum_name) {
            let _ = rustix::fs::unlinkat(self.dir, temp.as_str(), AtFlags::empty());
            return Err(err);
        }
        self.rename_into_place(&temp, &name)?;
        if let Err(err) = self.sync_dir() {
            log::debug!("cannot fsync the cache directory: {err}");
        }
        let written = file
            .metadata()
            .map_err(|source| cache_error("stat", &name, source))?;
        drop(file);
        let reopened =
            open_in(self.view, &name, OFlags::RDONLY).map_err(|e| cache_error("open", &name, e))?;
        let seen = reopened
            .metadata()
            .map_err(|source| cache_error("stat", &name, source))?;
        if !same_inode(&written, &seen) {
            // Another writer renamed its entry over ours; its checksum is not ours.
            let source = io::Error::other("replaced by another writer");
            return Err(cache_error("reopen", &name, source));
        }
        Ok(VerifiedArtifact {
            file: reopened,
            name,
        })
    }

    /// Removes least recently used entries until the total is within the bound. The
    /// entry `keep` (the one just stored) stays. Best effort: failures are logged.
    pub(crate) fn evict(&self, keep: &str) {
        let mut entries = match self.entries() {
            Ok(entries) => entries,
            Err(err) => {
                log::warn!("{err}; not evicting");
                return;
            }
        };
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        entries.sort_by_key(|e| e.mtime);
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            if entry.key == keep {
                continue;
            }
            for name in [
                format!("{}{ARTIFACT_EXT}", entry.key),
                format!("{}{SUM_EXT}", entry.key),
            ] {
                if let Err(err) = rustix::fs::unlinkat(self.dir, name.as_str(), AtFlags::empty())
                    && err != rustix::io::Errno::NOENT
                {
                    log::warn!("cannot evict cache entry {name}: {err}");
                }
            }
            total = total.saturating_sub(entry.size);
            log::debug!("evicted cache entry {}", entry.key);
        }
    }

    /// The entries in the directory, with their total size and last use; also removes
    /// stale temp files.
    fn entries(&self) -> Result<Vec<Entry>, WasmError> {
        let listing = rustix::fs::openat(
            self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new)
        .map_err(|err| cache_error("list", ".", err.into()))?;
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for dirent in listing {
            let dirent = dirent.map_err(|err| cache_error("list", ".", err.into()))?;
            let Ok(name) = dirent.file_name().to_str() else {
                continue;
            };
            let orphan_sum = name
                .strip_suffix(SUM_EXT)
                .filter(|k| is_key(k))
                .is_some_and(|k| {
                    let artifact = format!("{k}{ARTIFACT_EXT}");
                    rustix::fs::statat(self.dir, artifact.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_err()
                });
            if name.starts_with(TEMP_PREFIX) || orphan_sum {
                self.remove_if_stale(name, now);
                continue;
            }
            let Some(key) = name.strip_suffix(ARTIFACT_EXT).filter(|k| is_key(k)) else {
                continue;
            };
            let Ok(stat) = rustix::fs::statat(self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let sum_size = rustix::fs::statat(
                self.dir,
                format!("{key}{SUM_EXT}").as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map(|s| s.st_size)
            .unwrap_or(0);
            entries.push(Entry {
                key: key.to_owned(),
                size: u64::try_from(stat.st_size + sum_size).unwrap_or(0),
                mtime: (stat.st_mtime, stat.st_mtime_nsec),
            });
        }
        Ok(entries)
    }

    fn remove_if_stale(&self, name: &str, now: SystemTime) {
        let Ok(stat) = rustix::fs::statat(self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return;
        };
        let mtime = u64::try_from(stat.st_mtime)
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now.duration_since(mtime).unwrap_or_default() > STALE_TEMP {
            let _ = rustix::fs::unlinkat(self.dir, name, AtFlags::empty());
        }
    }

    fn read_small(&self, name: &str) -> io::Result<String> {
        let mut text = String::new();
        open_in(self.view, name, OFlags::RDONLY)?
            .take(256)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Creates a unique temp file, writes and fsyncs `bytes`; returns it (read-write) and
    /// its name.
    fn write_temp(&self, key: &str, bytes: &[u8]) -> Result<(File, String), WasmError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = format!(
            "{TEMP_PREFIX}{key}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            self.dir,
            temp.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|err| cache_error("create", &temp, err.into()))?;
        let mut file = File::from(fd);
        if let Err(source) = file.write_all(bytes).and_then(|()| file.sync_all()) {
            let _ = rustix::fs::unlinkat(self.dir, temp.as_str(), AtFlags::empty());
            return Err(cache_error("write", &temp, source));
        }
        Ok((file, temp))
    }

    fn rename_into_place(&self, temp: &str, name: &str) -> Result<(), WasmError> {
        rustix::fs::renameat(self.dir, temp, self.dir, name).map_err(|err| {
            let _ = rustix::fs::unlinkat(self.dir, temp, AtFlags::empty());
            cache_error("rename into", name, err.into())
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        let fd = rustix::fs::openat(
            self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsync(fd.as_fd())?;
        Ok(())
    }
}

fn open_in(dir: BorrowedFd<'_>, name: &str, flags: OFlags) -> io::Result<File> {
    let fd: OwnedFd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

struct Entry {
    key: String,
    size: u64,
    mtime: (i64, u64),
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn len64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn sum_line(digest: &[u8; 32], len: u64) -> String {
    format!("{} {len}", hex(digest))
}

/// sha256 and length of everything readable through `file` (read from offset 0).
fn digest_file(file: &File) -> io::Result<([u8; 32], u64)> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok((hasher.finalize().into(), offset));
        }
        hasher.update(&buf[..n]);
        offset += len64(&buf[..n]);
    }
}

fn cache_error(op: &'static str, name: &str, source: io::Error) -> WasmError {
    WasmError::Cache {
        op,
        path: PathBuf::from(name),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_module_and_engine() {
        let a = key(b"module", &[0; 32]);
        assert!(is_key(&a), "{a}");
        assert_eq!(a, key(b"module", &[0; 32]));
        assert_ne!(a, key(b"module2", &[0; 32]));
        assert_ne!(a, key(b"module", &[1; 32]));
    }

    #[test]
    fn store_then_lookup_then_detect_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        let cache = Cache::new(fd.as_fd(), fd.as_fd(), 1 << 20);
        let k = key(b"m", &[0; 32]);
        assert!(matches!(cache.lookup(&k).unwrap(), Lookup::Absent));
        let stored = cache.store(&k, b"artifact bytes").unwrap();
        assert_eq!(stored.read_all().unwrap(), b"artifact bytes");
        let Lookup::Found(found) = cache.lookup(&k).unwrap() else {
            panic!("expected a verified entry");
        };
        assert_eq!(found.read_all().unwrap(), b"artifact bytes");
        std::fs::write(dir.path().join(format!("{k}.cwasm")), b"artifact").unwrap();
        assert!(matches!(cache.lookup(&k).unwrap(), Lookup::Corrupt(_)));
        std::fs::remove_file(dir.path().join(format!("{k}.sum"))).unwrap();
        assert!(matches!(cache.lookup(&k).unwrap(), Lookup::Corrupt(_)));
    }

    #[test]
    fn entries_are_handed_out_through_the_view_only() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        let other = File::open(elsewhere.path()).unwrap();
        // A view that is not the directory: the written entry is not visible through it,
        // so it is not handed out (the writable fd never is).
        let cache = Cache::new(fd.as_fd(), other.as_fd(), 1 << 20);
        let k = key(b"m", &[0; 32]);
        let err = cache.store(&k, b"artifact bytes").unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
        assert!(matches!(cache.lookup(&k).unwrap(), Lookup::Absent));
        // The same directory through a second fd (in the init: its read-only clone).
        let view = File::open(dir.path()).unwrap();
        let cache = Cache::new(fd.as_fd(), view.as_fd(), 1 << 20);
        let stored = cache.store(&k, b"artifact bytes").unwrap();
        assert_eq!(stored.read_all().unwrap(), b"artifact bytes");
        assert!(matches!(cache.lookup(&k).unwrap(), Lookup::Found(_)));
    }

    #[test]
    fn too_large_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        let cache = Cache::new(fd.as_fd(), fd.as_fd(), 10);
        let err = cache.store(&key(b"m", &[0; 32]), &[0; 64]).unwrap_err();
        assert!(err.to_string().contains("exceed the cache bound"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
