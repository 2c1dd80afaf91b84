//! One image layer: a set of files, directories and symlinks, written as a deterministic
//! tar archive (sorted entries, mtime 0, uid/gid 0, no user or group names), so the same
//! input always gives the same layer digest.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Error;

/// What a path in the layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its permission bits.
    Dir {
        /// Permission bits (`0o755`, ...).
        mode: u32,
    },
    /// A regular file.
    File {
        /// The file's contents.
        data: Vec<u8>,
        /// Permission bits (`0o644`, `0o755`, ...).
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as written.
        target: String,
    },
}

/// The contents of one layer, keyed by path relative to the root (`etc/hostname`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

/// Mode of the directories added implicitly as parents.
const PARENT_DIR_MODE: u32 = 0o755;

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer::default()
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// The entry at `path` (absolute or relative to the root).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Adds (or replaces) a regular file at `path`, creating its parent directories.
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<(), Error> {
        let path = normalize(path)?;
        self.add_parents(&path)?;
        self.insert(path, Entry::File { data, mode })
    }

    /// Adds a directory at `path` (and its parents).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), Error> {
        let path = normalize(path)?;
        self.add_parents(&path)?;
        self.insert(path, Entry::Dir { mode })
    }

    /// Adds a symlink at `path` pointing at `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), Error> {
        let path = normalize(path)?;
        self.add_parents(&path)?;
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// A layer holding everything under `dir` (regular files, directories, symlinks;
    /// hard links become copies). Sockets, FIFOs and device nodes are refused.
    pub fn from_dir(dir: &Path) -> Result<Layer, Error> {
        let meta = fs::metadata(dir).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(dir.to_path_buf()));
        }
        let mut layer = Layer::new();
        layer.add_tree(dir, "")?;
        Ok(layer)
    }

    fn add_tree(&mut self, dir: &Path, prefix: &str) -> Result<(), Error> {
        let read_err = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort();
        for name in names {
            let host = dir.join(&name);
            let name = name
                .to_str()
                .ok_or_else(|| Error::NonUtf8Path(host.clone()))?;
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(&host).map_err(|source| Error::Read {
                path: host.clone(),
                source,
            })?;
            let mode = meta.permissions().mode() & 0o7777;
            let ty = meta.file_type();
            if ty.is_symlink() {
                let target = fs::read_link(&host).map_err(|source| Error::Read {
                    path: host.clone(),
                    source,
                })?;
                let target = target
                    .to_str()
                    .ok_or_else(|| Error::NonUtf8Path(host.clone()))?;
                self.add_symlink(&rel, target)?;
            } else if ty.is_dir() {
                self.add_dir(&rel, mode)?;
                self.add_tree(&host, &rel)?;
            } else if ty.is_file() {
                let data = fs::read(&host).map_err(|source| Error::Read {
                    path: host.clone(),
                    source,
                })?;
                self.add_file(&rel, data, mode)?;
            } else {
                return Err(Error::UnsupportedFileType(host));
            }
        }
        Ok(())
    }

    fn add_parents(&mut self, path: &str) -> Result<(), Error> {
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len().saturating_sub(1)] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => return Err(Error::NotADirectoryInLayer(parent)),
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry::Dir {
                            mode: PARENT_DIR_MODE,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn insert(&mut self, path: String, entry: Entry) -> Result<(), Error> {
        let replacing_dir_with_other = matches!(self.entries.get(&path), Some(Entry::Dir { .. }))
            && !matches!(entry, Entry::Dir { .. })
            && self
                .entries
                .keys()
                .any(|k| k.len() > path.len() && k.starts_with(&format!("{path}/")));
        if replacing_dir_with_other {
            return Err(Error::NotADirectoryInLayer(path));
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// The layer as an uncompressed tar archive (`application/vnd.oci.image.layer.v1.tar`).
    pub fn to_tar(&self) -> Result<Vec<u8>, Error> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(Error::Tar)?;
                }
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, path, data.as_slice())
                        .map_err(Error::Tar)?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .map_err(Error::Tar)?;
                }
            }
        }
        builder.into_inner().map_err(Error::Tar)
    }
}

/// `"/a/b"`, `"a/b"` and `"./a//b"` become `"a/b"`; `..`, an empty path or the root alone are
/// refused.
pub fn normalize(path: &str) -> Result<String, Error> {
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(Error::LayerPath(path.to_string())),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(Error::LayerPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, u64, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("tar entries") {
            let mut entry = entry.expect("tar entry");
            let header = entry.header().clone();
            let path = entry
                .path()
                .expect("entry path")
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
            out.push((
                path,
                header.entry_type(),
                header.mtime().expect("mtime"),
                header.uid().expect("uid") as u32 + header.gid().expect("gid") as u32,
                data,
            ));
        }
        out
    }

    #[test]
    fn paths_are_normalized_and_escapes_refused() {
        assert_eq!(normalize("/a/b").expect("abs"), "a/b");
        assert_eq!(normalize("./a//b/").expect("dots"), "a/b");
        assert!(normalize("/").is_err());
        assert!(normalize("a/../../etc").is_err());
    }

    #[test]
    fn tar_is_sorted_with_parents_and_fixed_metadata() {
        let mut layer = Layer::new();
        layer
            .add_file("/z/data.txt", b"zz".to_vec(), 0o644)
            .expect("add");
        layer
            .add_file("/hello.wasm", b"\0asm".to_vec(), 0o755)
            .expect("add");
        layer.add_symlink("/a-link", "hello.wasm").expect("link");
        let entries = tar_entries(&layer.to_tar().expect("tar"));
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a-link", "hello.wasm", "z/", "z/data.txt"]);
        assert!(entries.iter().all(|e| e.2 == 0 && e.3 == 0));
        assert_eq!(entries[1].4, b"\0asm");
        assert_eq!(entries[2].1, tar::EntryType::Directory);
        assert_eq!(entries[0].1, tar::EntryType::Symlink);
    }

    #[test]
    fn same_input_same_bytes() {
        let build = || {
            let mut l = Layer::new();
            l.add_file("b", b"1".to_vec(), 0o644).expect("add");
            l.add_file("a", b"2".to_vec(), 0o644).expect("add");
            l.to_tar().expect("tar")
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let mut layer = Layer::new();
        layer.add_file("x", b"".to_vec(), 0o644).expect("add");
        assert!(layer.add_file("x/y", b"".to_vec(), 0o644).is_err());
    }

    #[test]
    fn from_dir_keeps_files_modes_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("bin")).expect("mkdir");
        fs::write(dir.path().join("bin/tool"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(
            dir.path().join("bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("bin/tool", dir.path().join("tool")).expect("symlink");
        let layer = Layer::from_dir(dir.path()).expect("from_dir");
        assert_eq!(
            layer.get("/bin/tool"),
            Some(&Entry::File {
                data: b"#!/bin/sh\n".to_vec(),
                mode: 0o755
            })
        );
        assert_eq!(
            layer.get("tool"),
            Some(&Entry::Symlink {
                target: "bin/tool".into()
            })
        );
        assert!(matches!(layer.get("bin"), Some(Entry::Dir { .. })));
    }
}
