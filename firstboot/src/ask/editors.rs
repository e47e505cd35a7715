//! Answers files as novices' editors save them. Windows Notepad adds a byte-order mark, saves
//! "Unicode" as UTF-16 and hides a `.txt` it appends to the name; macOS TextEdit saves rich text
//! and turns quotes curly; Finder leaves `._` files beside everything it copies to a FAT disk.
//! What can be read unambiguously is read; the rest is explained with the fix.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The name the docs give, on the ESP.
pub const ANSWERS_NAME: &str = "meetbox-setup.toml";

/// The answers file in `dir` (the ESP): `meetbox-setup.toml`, or the same with an extension an
/// editor added or chose (`.toml.txt`, `.txt`, `.rtf`, none), in any letter case. Two candidates
/// are refused, since either could be the one the owner meant.
pub fn find_in(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| is_answers_name(&entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "there are {} answers files on the boot partition: {}. Keep one, named {ANSWERS_NAME}, and delete the others.",
            found.len(),
            found
                .iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn is_answers_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    // Finder's AppleDouble companions hold metadata, not the answers.
    !lower.starts_with("._")
        && [
            "meetbox-setup.toml",
            "meetbox-setup.toml.txt",
            "meetbox-setup.txt",
            "meetbox-setup.toml.rtf",
            "meetbox-setup.rtf",
            "meetbox-setup",
        ]
        .contains(&lower.as_str())
}

/// The file's text: UTF-8 with or without a byte-order mark, or UTF-16 with one; line ends of
/// any system become `\n`. Rich text and other encodings are refused with the fix.
pub fn decode(bytes: &[u8]) -> Result<String> {
    let text = if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        utf8(rest)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)?
    } else {
        utf8(bytes)?
    };
    if text.trim_start().starts_with("{\\rtf") {
        bail!(
            "the answers file was saved as rich text (RTF), not plain text. In TextEdit choose \
             Format > Make Plain Text, then save it again as {ANSWERS_NAME}."
        );
    }
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        anyhow::anyhow!(
            "the answers file is not UTF-8 text (perhaps saved as \"ANSI\"). In Notepad choose \
             File > Save As and the encoding UTF-8, then save it again."
        )
    })
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String> {
    if bytes.len() % 2 != 0 {
        bail!("the answers file is cut short (an odd number of bytes of UTF-16); save it again");
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| unit([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| {
        anyhow::anyhow!("the answers file is damaged UTF-16 text; save it again as UTF-8")
    })
}

/// Curly quotes (“ ” ‘ ’), as TextEdit and Word type them, made straight. Used only when the file
/// does not parse as written: a file that parses means what it says.
pub fn straighten_quotes(text: &str) -> Option<String> {
    let curly = ['\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}'];
    if !text.contains(curly) {
        return None;
    }
    Some(
        text.replace(['\u{201C}', '\u{201D}'], "\"")
            .replace(['\u{2018}', '\u{2019}'], "'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "domain = \"meet.example.org\"\n";

    #[test]
    fn notepad_byte_order_marks_and_line_ends_are_read() {
        let mut with_bom = vec![0xEF, 0xBB, 0xBF];
        with_bom.extend_from_slice(b"domain = \"meet.example.org\"\r\n");
        assert_eq!(decode(&with_bom).unwrap(), TEXT);
        let mut utf16le = vec![0xFF, 0xFE];
        for unit in "domain = \"meet.example.org\"\r\n".encode_utf16() {
            utf16le.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(decode(&utf16le).unwrap(), TEXT);
        assert_eq!(decode(b"domain = \"meet.example.org\"\r").unwrap(), TEXT);
    }

    #[test]
    fn rich_text_and_ansi_are_explained() {
        let rtf = format!("{:#}", decode(b"{\\rtf1\\ansi domain}").unwrap_err());
        assert!(rtf.contains("Make Plain Text"), "{rtf}");
        let ansi = format!(
            "{:#}",
            decode(b"admin_password = \"caf\xe9 caf\xe9\"").unwrap_err()
        );
        assert!(ansi.contains("UTF-8"), "{ansi}");
    }

    #[test]
    fn curly_quotes_are_straightened() {
        assert_eq!(
            straighten_quotes("domain = \u{201C}meet.example.org\u{201D}\n").as_deref(),
            Some(TEXT)
        );
        assert_eq!(straighten_quotes(TEXT), None);
    }

    #[test]
    fn the_names_editors_give_are_found_and_two_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("._meetbox-setup.toml"), b"\0\x05\x16\x07").unwrap();
        std::fs::write(dir.path().join("EFI"), b"").unwrap();
        assert_eq!(find_in(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("MeetBox-Setup.toml.txt"), TEXT).unwrap();
        assert_eq!(
            find_in(dir.path()).unwrap(),
            Some(dir.path().join("MeetBox-Setup.toml.txt"))
        );
        std::fs::write(dir.path().join("meetbox-setup.toml"), TEXT).unwrap();
        let two = format!("{:#}", find_in(dir.path()).unwrap_err());
        assert!(two.contains("Keep one"), "{two}");
        assert_eq!(find_in(&dir.path().join("absent")).unwrap(), None);
    }
}
