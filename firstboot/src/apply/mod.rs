//! Writing into the target root: every file atomically (temporary file in the same directory, then
//! rename), with its mode and owner set before it becomes visible. Owners are looked up in the target's
//! own /etc/passwd and /etc/group; a user the target lacks (a package not installed) leaves root as owner.

pub mod accounts;
pub mod jitsi_env;
pub mod services;
pub mod snapshot;
pub mod swap;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Who owns a written file, by name on the target system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub user: &'static str,
    pub group: &'static str,
}

impl Owner {
    pub const ROOT: Owner = Owner {
        user: "root",
        group: "root",
    };
    pub const fn new(user: &'static str, group: &'static str) -> Self {
        Owner { user, group }
    }
}

/// One file to write on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path on the target system.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub owner: Owner,
}

impl FileSpec {
    pub fn new(
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
        mode: u32,
        owner: Owner,
    ) -> Self {
        FileSpec {
            path: path.into(),
            content: content.into(),
            mode,
            owner,
        }
    }
}

/// The target system's root directory.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    /// True when the target is the running system, so services may be started.
    pub fn is_live(&self) -> bool {
        self.dir == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Maps an absolute target path below the root.
    pub fn path(&self, target: &str) -> PathBuf {
        self.dir.join(target.trim_start_matches('/'))
    }

    pub fn exists(&self, target: &str) -> bool {
        self.path(target).exists()
    }

    pub fn read_to_string(&self, target: &str) -> Result<String> {
        let path = self.path(target);
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The agent's JSON record at `target`: None when there is none yet. A damaged one is an
    /// error that names the file, calls it `what` and says what to do (`fix`).
    pub fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        what: &str,
        fix: &str,
    ) -> Result<Option<T>> {
        if !self.exists(target) {
            return Ok(None);
        }
        let text = self.read_to_string(target)?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{what} {target} is damaged; {fix}"))
    }

    /// Writes one file atomically with its mode and owner.
    pub fn write(&self, file: &FileSpec) -> Result<()> {
        let (uid, gid) = self.lookup_owner(file.owner)?;
        write_atomically(&self.path(&file.path), &file.content, file.mode, uid, gid)
    }

    /// Replaces the content of a file that a package owns, atomically, keeping its mode and numeric
    /// owner: the package chose them (and may have a dpkg-statoverride on them), so they are not ours to
    /// change.
    pub fn replace(&self, target: &str, content: &[u8]) -> Result<()> {
        let path = self.path(target);
        let meta =
            fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        write_atomically(&path, content, meta.mode() & 0o7777, meta.uid(), meta.gid())
    }

    /// Clears the bits for others on a file a package owns (it now holds a secret).
    pub fn close_to_others(&self, target: &str) -> Result<()> {
        let path = self.path(target);
        let meta =
            fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mode = meta.mode() & 0o7770;
        if mode != meta.mode() & 0o7777 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes a directory with a mode (created if missing, mode and owner set either way).
    pub fn directory(&self, target: &str, mode: u32, owner: Owner) -> Result<()> {
        let path = self.path(target);
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        let (uid, gid) = self.lookup_owner(owner)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .with_context(|| format!("cannot set the owner of {}", path.display()))
    }

    /// Points `link` at `target` (relative targets stay relative), replacing what was there.
    pub fn symlink(&self, link: &str, target: &str) -> Result<()> {
        let path = self.path(link);
        if fs::read_link(&path).is_ok_and(|current| current == Path::new(target)) {
            return Ok(());
        }
        let parent = path.parent().context("a link has no parent directory")?;
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        let temp = parent.join(format!(
            ".meetbox-link-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("link")
        ));
        let _ = fs::remove_file(&temp);
        symlink(target, &temp)
            .with_context(|| format!("cannot create the link {}", temp.display()))?;
        fs::rename(&temp, &path)
            .with_context(|| format!("cannot move the link {} into place", path.display()))
    }

    /// Removes a file or link if present.
    pub fn remove(&self, target: &str) -> Result<()> {
        let path = self.path(target);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// Resolves an owner through the target's account files; absent names map to root.
    pub fn lookup_owner(&self, owner: Owner) -> Result<(u32, u32)> {
        let uid = self.lookup_id("/etc/passwd", owner.user)?.unwrap_or(0);
        let gid = self.lookup_id("/etc/group", owner.group)?.unwrap_or(0);
        Ok((uid, gid))
    }

    fn lookup_id(&self, table: &str, name: &str) -> Result<Option<u32>> {
        if name == "root" {
            return Ok(Some(0));
        }
        let path = self.path(table);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(id_in_table(&text, name))
    }
}

/// Writes `content` to a temporary file next to `path`, sets its mode and owner, then renames it over
/// `path`: readers see the old file or the new one, never a partial or wrongly owned one.
fn write_atomically(path: &Path, content: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
    let parent = path
        .parent()
        .context("a target file has no parent directory")?;
    fs::create_dir_all(parent)
        .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".meetbox-")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    temp.write_all(content)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    std::os::unix::fs::chown(temp.path(), Some(uid), Some(gid))
        .with_context(|| format!("cannot set the owner of {}", path.display()))?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the new {} into place", path.display()))?;
    Ok(())
}

/// The numeric id of `name` in a passwd- or group-format table.
fn id_in_table(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_with_mode_and_owner_from_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        root.write(&FileSpec::new(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nprosody:x:4242:4343::/var/lib/prosody:/bin/false\n",
            0o644,
            Owner::ROOT,
        ))
        .unwrap();
        root.write(&FileSpec::new(
            "/etc/group",
            "prosody:x:4343:\n",
            0o644,
            Owner::ROOT,
        ))
        .unwrap();
        let spec = FileSpec::new(
            "/etc/prosody/x.key",
            "k",
            0o600,
            Owner::new("prosody", "prosody"),
        );
        root.write(&spec).unwrap();
        let meta = fs::metadata(root.path("/etc/prosody/x.key")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        let leftovers: Vec<_> = fs::read_dir(root.path("/etc/prosody"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".meetbox-")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn replace_keeps_the_mode_and_owner_a_package_chose() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = root.path("/etc/jitsi/videobridge/config");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "A=1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        root.replace("/etc/jitsi/videobridge/config", b"A=2\n")
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "A=2\n");
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        assert!(root.replace("/etc/absent", b"x").is_err());
    }

    #[test]
    fn absent_users_fall_back_to_root_and_links_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        root.write(&FileSpec::new(
            "/a/f",
            "x",
            0o640,
            Owner::new("turnserver", "turnserver"),
        ))
        .unwrap();
        assert_eq!(fs::metadata(root.path("/a/f")).unwrap().uid(), 0);
        root.symlink("/b/l", "../a/f").unwrap();
        root.symlink("/b/l", "../a/g").unwrap();
        assert_eq!(
            fs::read_link(root.path("/b/l")).unwrap(),
            Path::new("../a/g")
        );
        root.remove("/b/l").unwrap();
        root.remove("/b/l").unwrap();
    }
}
