//! SHA-256 digests and the `SHA256SUMS` file (the format `sha256sum -c` reads).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Name of the checksum file of a build.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// A SHA-256 digest; written as 64 lower-case hex digits in manifests, checksum
/// files and trusted comments.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Finishes a running hash.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Sha256Digest(hasher.finalize().into())
    }

    /// Digest of a whole file, read in large blocks (for the small files of a build;
    /// images are hashed while streaming, see `signing` and `verify`).
    pub fn of_file(path: &Path) -> Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                return Ok(Self::from_hasher(hasher));
            }
            hasher.update(&buffer[..n]);
        }
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl FromStr for Sha256Digest {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .with_context(|| format!("{text:?} is not a SHA-256 digest (64 hex digits)"))?;
        Ok(Sha256Digest(bytes))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One line of a `SHA256SUMS` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumsEntry {
    pub digest: Sha256Digest,
    pub file_name: String,
}

/// Renders entries in the text format of `sha256sum` (`<hex>  <file>`), in the given order.
pub fn render_sums(entries: &[SumsEntry]) -> String {
    entries
        .iter()
        .map(|entry| format!("{}  {}\n", entry.digest, entry.file_name))
        .collect()
}

/// Parses a `SHA256SUMS` file; accepts text (`  `) and binary (` *`) mode lines.
pub fn parse_sums(text: &str) -> Result<Vec<SumsEntry>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let parsed = line
                .split_once("  ")
                .or_else(|| line.split_once(" *"))
                .filter(|(_, name)| !name.is_empty());
            let Some((digest, file_name)) = parsed else {
                bail!("line {} is not `<sha256>  <file>`: {line:?}", index + 1);
            };
            Ok(SumsEntry {
                digest: digest
                    .parse()
                    .with_context(|| format!("line {} of {SUMS_FILE}", index + 1))?,
                file_name: file_name.to_string(),
            })
        })
        .collect()
}

/// The digest listed for `file_name`, if the entries name it exactly once.
pub fn digest_listed_for(entries: &[SumsEntry], file_name: &str) -> Result<Sha256Digest> {
    let mut matching = entries.iter().filter(|entry| entry.file_name == file_name);
    match (matching.next(), matching.next()) {
        (Some(entry), None) => Ok(entry.digest),
        (None, _) => bail!("{SUMS_FILE} does not list {file_name}"),
        (Some(_), Some(_)) => bail!("{SUMS_FILE} lists {file_name} more than once"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_known_input_round_trips_through_hex() {
        let digest = Sha256Digest::of(b"abc");
        let text = digest.to_string();
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(text.parse::<Sha256Digest>().unwrap(), digest);
        assert!("xyz".parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn sums_render_and_parse_are_inverse_and_accept_binary_mode() {
        let entries = vec![
            SumsEntry {
                digest: Sha256Digest::of(b"a"),
                file_name: "a.img.zst".into(),
            },
            SumsEntry {
                digest: Sha256Digest::of(b"b"),
                file_name: "a.img.bmap".into(),
            },
        ];
        let text = render_sums(&entries);
        assert_eq!(parse_sums(&text).unwrap(), entries);
        let binary = text.replacen("  ", " *", 1);
        assert_eq!(parse_sums(&binary).unwrap(), entries);
        assert_eq!(
            digest_listed_for(&entries, "a.img.bmap").unwrap(),
            Sha256Digest::of(b"b")
        );
        assert!(digest_listed_for(&entries, "missing").is_err());
    }

    #[test]
    fn malformed_sums_lines_are_rejected_with_their_line_number() {
        let error = parse_sums("not a sums line\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        let duplicated = format!("{0}  x\n{0}  x\n", Sha256Digest::of(b""));
        let entries = parse_sums(&duplicated).unwrap();
        assert!(digest_listed_for(&entries, "x").is_err());
    }
}
