//! The file names of one build's artifacts, derived from the build name, so every
//! command (build, verify, flash, inspect) agrees on them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::artifact::checksums::SUMS_FILE;

/// Suffix of the compressed image; the build name is what precedes it.
pub const IMAGE_ZST_SUFFIX: &str = ".img.zst";
/// Suffix minisign gives signature files.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// Paths of all artifacts of the build `name` in `dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildFiles {
    pub dir: PathBuf,
    pub name: String,
}

impl BuildFiles {
    pub fn new(dir: &Path, name: &str) -> Self {
        BuildFiles {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The build that `NAME.img.zst` belongs to (its siblings are in the same directory).
    pub fn from_image_zst(image_zst: &Path) -> Result<Self> {
        let file_name = image_zst
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("{} is not a file name", image_zst.display()))?;
        let Some(name) = file_name
            .strip_suffix(IMAGE_ZST_SUFFIX)
            .filter(|n| !n.is_empty())
        else {
            bail!(
                "{} does not end in {IMAGE_ZST_SUFFIX}: pass the compressed image NAME{IMAGE_ZST_SUFFIX} of a build",
                image_zst.display()
            );
        };
        let dir = match image_zst.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Ok(Self::new(dir, name))
    }

    pub fn image_zst_name(&self) -> String {
        format!("{}{IMAGE_ZST_SUFFIX}", self.name)
    }
    pub fn bmap_name(&self) -> String {
        format!("{}.img.bmap", self.name)
    }
    pub fn manifest_name(&self) -> String {
        format!("{}.manifest.json", self.name)
    }
    pub fn image_signature_name(&self) -> String {
        format!("{}{SIGNATURE_SUFFIX}", self.image_zst_name())
    }
    pub fn sums_signature_name(&self) -> String {
        format!("{SUMS_FILE}{SIGNATURE_SUFFIX}")
    }

    pub fn image_zst(&self) -> PathBuf {
        self.dir.join(self.image_zst_name())
    }
    pub fn bmap(&self) -> PathBuf {
        self.dir.join(self.bmap_name())
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(self.manifest_name())
    }
    pub fn sums(&self) -> PathBuf {
        self.dir.join(SUMS_FILE)
    }
    pub fn image_signature(&self) -> PathBuf {
        self.dir.join(self.image_signature_name())
    }
    pub fn sums_signature(&self) -> PathBuf {
        self.dir.join(self.sums_signature_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_compressed_image_path() {
        let files = BuildFiles::from_image_zst(Path::new("out/meetbox-x.img.zst")).unwrap();
        assert_eq!(files.name, "meetbox-x");
        assert_eq!(files.bmap(), Path::new("out/meetbox-x.img.bmap"));
        assert_eq!(files.manifest(), Path::new("out/meetbox-x.manifest.json"));
        assert_eq!(
            files.image_signature(),
            Path::new("out/meetbox-x.img.zst.minisig")
        );
        assert_eq!(files.sums_signature(), Path::new("out/SHA256SUMS.minisig"));
        let bare = BuildFiles::from_image_zst(Path::new("a.img.zst")).unwrap();
        assert_eq!(bare.image_zst(), Path::new("./a.img.zst"));
    }

    #[test]
    fn other_files_are_refused_with_the_expected_form() {
        let error = BuildFiles::from_image_zst(Path::new("disk.img")).unwrap_err();
        assert!(error.to_string().contains("NAME.img.zst"), "{error}");
        assert!(BuildFiles::from_image_zst(Path::new(".img.zst")).is_err());
    }
}
