//! A copy of some files of the target, kept in memory, to put back exactly as they were (content,
//! mode, owner, or absence) when a change that rewrites them fails half-way.

use std::fs;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};

use super::{write_atomically, Root};

struct Kept {
    target: String,
    /// None: the file did not exist, and a restore removes it.
    content: Option<(Vec<u8>, u32, u32, u32)>,
}

pub struct Snapshot {
    files: Vec<Kept>,
}

impl Snapshot {
    /// Reads `targets` now (a missing file is remembered as missing).
    pub fn take(root: &Root, targets: &[String]) -> Result<Snapshot> {
        let mut files = Vec::new();
        for target in targets {
            let path = root.path(target);
            let content = match fs::symlink_metadata(&path) {
                Ok(meta) => {
                    let bytes = fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some((bytes, meta.mode() & 0o7777, meta.uid(), meta.gid()))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot inspect {}", path.display()))
                }
            };
            files.push(Kept {
                target: target.clone(),
                content,
            });
        }
        Ok(Snapshot { files })
    }

    /// Puts every file back as it was when the snapshot was taken.
    pub fn restore(&self, root: &Root) -> Result<()> {
        for kept in &self.files {
            match &kept.content {
                Some((bytes, mode, uid, gid)) => {
                    write_atomically(&root.path(&kept.target), bytes, *mode, *uid, *gid)?
                }
                None => root.remove(&kept.target)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{FileSpec, Owner};

    #[test]
    fn restores_content_mode_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        root.write(&FileSpec::new("/etc/a.conf", "old", 0o640, Owner::ROOT))
            .unwrap();
        let targets = ["/etc/a.conf".to_string(), "/etc/b.conf".to_string()];
        let snapshot = Snapshot::take(&root, &targets).unwrap();
        root.write(&FileSpec::new("/etc/a.conf", "new", 0o600, Owner::ROOT))
            .unwrap();
        root.write(&FileSpec::new("/etc/b.conf", "added", 0o644, Owner::ROOT))
            .unwrap();
        snapshot.restore(&root).unwrap();
        assert_eq!(root.read_to_string("/etc/a.conf").unwrap(), "old");
        let mode = fs::metadata(root.path("/etc/a.conf")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!root.exists("/etc/b.conf"));
    }
}
