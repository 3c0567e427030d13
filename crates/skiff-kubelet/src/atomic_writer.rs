//! Atomic updates of a volume directory whose files come from the API (the scheme
//! of upstream's `pkg/volume/util/atomic_writer.go`), so a process reading the
//! volume never sees a half-written file or a mix of old and new files.
//!
//! Layout of a volume directory `DIR`:
//!
//! ```text
//! DIR/..2026_11_26_01_30_11.123456789   the current payload (real files, with modes)
//! DIR/..data -> ..2026_11_26_01_30_11.123456789
//! DIR/token  -> ..data/token            one link per top-level name of the payload
//! DIR/sub    -> ..data/sub
//! ```
//!
//! An update writes the new payload into a fresh timestamped directory, points a
//! temporary link `..data_tmp` at it and renames that link over `..data` (one
//! atomic `rename(2)`), then adds links for new top-level names, removes links to
//! names no longer in the payload and deletes the previous payload directory.
//! Names starting with `..` are reserved for this bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The link naming the current payload directory.
pub const DATA_DIR_NAME: &str = "..data";
const DATA_DIR_TMP_NAME: &str = "..data_tmp";

/// The content of a volume: relative path -> (bytes, file mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Why a volume directory could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// A payload path is absolute, empty, has an empty, `.` or `..` segment, or
    /// starts with `..` (reserved for the writer's own entries).
    #[error("invalid path {0:?} in volume")]
    InvalidPath(String),
    /// Two payload paths collide (one is a directory prefix of the other).
    #[error("paths {0:?} and {1:?} in volume collide")]
    Collision(String, String),
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError + '_ {
    move |source| AtomicWriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks every path of the payload (see [`AtomicWriteError::InvalidPath`]).
pub fn validate(payload: &Payload) -> Result<(), AtomicWriteError> {
    for rel in payload.keys() {
        let bad = rel.is_empty()
            || rel.starts_with('/')
            || rel.starts_with("..")
            || rel.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if bad {
            return Err(AtomicWriteError::InvalidPath(rel.clone()));
        }
    }
    let keys: Vec<&String> = payload.keys().collect();
    for pair in keys.windows(2) {
        if pair[1].starts_with(&format!("{}/", pair[0])) {
            return Err(AtomicWriteError::Collision(pair[0].clone(), pair[1].clone()));
        }
    }
    Ok(())
}

fn top_level(payload: &Payload) -> BTreeSet<String> {
    payload
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect()
}

/// Whether the payload directory `data` holds exactly `payload` (contents and modes).
fn unchanged(data: &Path, payload: &Payload) -> bool {
    let mut on_disk = BTreeSet::new();
    collect_files(data, data, &mut on_disk);
    if on_disk.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(rel, (content, mode))| {
        let p = data.join(rel);
        on_disk.contains(rel)
            && std::fs::symlink_metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode & 0o7777)
            && std::fs::read(&p).is_ok_and(|c| &c == content)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(root, &p, out),
            Ok(_) => {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.insert(rel.to_string_lossy().into_owned());
                }
            }
            Err(_) => {}
        }
    }
}

fn new_payload_dir(dir: &Path) -> Result<PathBuf, AtomicWriteError> {
    for _ in 0..64 {
        let now = jiff::Timestamp::now();
        let name = format!("{}.{:09}", now.strftime("..%Y_%m_%d_%H_%M_%S"), now.subsec_nanosecond());
        let p = dir.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&p))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::thread::yield_now(),
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Err(io_err(dir)(io::Error::other("no free payload directory name")))
}

/// Makes `dir` hold exactly `payload`, atomically (see the module docs). Nothing is
/// rewritten when the current payload already matches. Returns whether the
/// content changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    validate(payload)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let data_link = dir.join(DATA_DIR_NAME);
    let old_target = std::fs::read_link(&data_link).ok();
    let wanted_links = top_level(payload);
    let links_ok = || {
        wanted_links
            .iter()
            .all(|name| std::fs::read_link(dir.join(name)).is_ok_and(|t| t == Path::new(DATA_DIR_NAME).join(name)))
    };
    if let Some(old) = &old_target
        && unchanged(&dir.join(old), payload)
        && links_ok()
    {
        return Ok(false);
    }

    // 1. The new payload, in a directory of its own.
    let fresh = new_payload_dir(dir)?;
    for (rel, (content, mode)) in payload {
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, content).map_err(io_err(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(io_err(&path))?;
    }

    // 2. Swap `..data` to it in one rename.
    let tmp_link = dir.join(DATA_DIR_TMP_NAME);
    let _ = std::fs::remove_file(&tmp_link);
    let fresh_name = fresh.file_name().expect("a payload directory has a name");
    std::os::unix::fs::symlink(fresh_name, &tmp_link).map_err(io_err(&tmp_link))?;
    std::fs::rename(&tmp_link, &data_link).map_err(io_err(&data_link))?;

    // 3. User-visible links: add the new names, drop the vanished ones.
    for name in &wanted_links {
        let link = dir.join(name);
        let target = Path::new(DATA_DIR_NAME).join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).is_ok_and(|t| t == target) {
                    continue;
                }
                std::fs::remove_file(&link).map_err(io_err(&link))?;
            }
            // A plain file or directory from before this layout.
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link).map_err(io_err(&link))?,
            Ok(_) => std::fs::remove_file(&link).map_err(io_err(&link))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link).map_err(io_err(&link))?;
    }
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || wanted_links.contains(&name) {
            continue;
        }
        let p = e.path();
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        removed.map_err(io_err(&p))?;
    }

    // 4. The previous payload (and any left behind by an interrupted update).
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_payload_dir = name.starts_with("..") && name != DATA_DIR_NAME && name != DATA_DIR_TMP_NAME;
        if is_payload_dir && *name != *fresh_name.to_string_lossy() {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(p, c, m)| (p.to_string(), (c.as_bytes().to_vec(), *m)))
            .collect()
    }

    fn read(dir: &Path, rel: &str) -> String {
        std::fs::read_to_string(dir.join(rel)).unwrap()
    }

    #[test]
    fn files_are_links_into_the_current_payload() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert!(write(dir, &payload(&[("token", "t1", 0o644), ("sub/ca.crt", "ca", 0o600)])).unwrap());
        assert_eq!(read(dir, "token"), "t1");
        assert_eq!(read(dir, "sub/ca.crt"), "ca");
        assert_eq!(
            std::fs::read_link(dir.join("token")).unwrap(),
            Path::new("..data/token")
        );
        let mode = std::fs::metadata(dir.join("sub/ca.crt")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(dir.join(DATA_DIR_NAME)).unwrap();

        // Same payload: nothing is rewritten.
        assert!(!write(dir, &payload(&[("token", "t1", 0o644), ("sub/ca.crt", "ca", 0o600)])).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA_DIR_NAME)).unwrap(), first);

        // New content and a vanished name: a new payload dir, the old one removed.
        assert!(write(dir, &payload(&[("token", "t2", 0o644)])).unwrap());
        assert_eq!(read(dir, "token"), "t2");
        assert!(!dir.join("sub").exists());
        let second = std::fs::read_link(dir.join(DATA_DIR_NAME)).unwrap();
        assert_ne!(first, second);
        assert!(!dir.join(&first).exists());
        let names: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "..data".to_string(),
                "token".to_string(),
                second.to_string_lossy().into_owned()
            ])
        );
    }

    #[test]
    fn a_reader_holding_the_old_file_keeps_reading_it_whole() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        write(dir, &payload(&[("token", "old-token", 0o644)])).unwrap();
        let held = std::fs::File::open(dir.join("token")).unwrap();
        write(dir, &payload(&[("token", "new-token", 0o644)])).unwrap();
        assert_eq!(std::io::read_to_string(held).unwrap(), "old-token");
        assert_eq!(read(dir, "token"), "new-token");
    }

    #[test]
    fn plain_files_from_an_older_layout_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(dir.join("token"), "plain").unwrap();
        std::fs::write(dir.join("stale"), "x").unwrap();
        write(dir, &payload(&[("token", "linked", 0o644)])).unwrap();
        assert_eq!(read(dir, "token"), "linked");
        assert!(
            std::fs::symlink_metadata(dir.join("token"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!dir.join("stale").exists());
    }

    #[test]
    fn reserved_escaping_and_colliding_paths_are_refused() {
        for bad in ["../x", "/abs", "..data", "a//b", "a/./b", ""] {
            assert!(
                matches!(
                    validate(&payload(&[(bad, "", 0o644)])),
                    Err(AtomicWriteError::InvalidPath(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            validate(&payload(&[("a", "", 0o644), ("a/b", "", 0o644)])),
            Err(AtomicWriteError::Collision(..))
        ));
    }
}
