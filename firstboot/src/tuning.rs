//! The image's tuning, `/etc/meetbox/tuning.toml`: the box reads it, so this crate owns its schema
//! and its text ([`Tuning::to_toml`]). `meetbox build` fills it from the hardware and bandwidth
//! profiles (builder/src/sizing/; docs/sizing.md explains every value) and writes it with these
//! types; it is applied here: the config.js caps by the configuration step, the Java heaps by the
//! java-heaps step, the swap file by the swap step.
//!
//! Parsing is strict: an unknown or missing key stops setup with the file and the key named,
//! instead of leaving a setting silently at its packaged default.

use anyhow::{ensure, Context, Result};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::apply::Root;
use crate::layout;

/// What `meetbox build` derived for this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// Largest meeting at the capped resolution with every video visible.
    pub participants: u32,
    /// What stops the next participant.
    pub limited_by: Resource,
    pub videobridge: Heap,
    pub jicofo: Heap,
    pub swap: Swap,
    pub config_js: ConfigJsCaps,
}

/// The resource that caps the size of a meeting (the builder's sizing model finds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Uplink,
    Downlink,
    Cpu,
    Ram,
}

impl Resource {
    /// What to change to host more people.
    pub fn advice(self) -> &'static str {
        match self {
            Resource::Uplink => "a line with a faster upload, or a lower resolution",
            Resource::Downlink => "a line with a faster download, or a lower resolution",
            Resource::Cpu => "a box with more cores, or a lower resolution",
            Resource::Ram => "a box with more RAM",
        }
    }

    /// The resource in a few words (the console's summary line).
    pub fn describe(self) -> &'static str {
        match self {
            Resource::Uplink => "the line's upload",
            Resource::Downlink => "the line's download",
            Resource::Cpu => "the CPU",
            Resource::Ram => "the RAM",
        }
    }
}

/// The resource and why it binds (the builder's reports and warnings).
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Uplink => {
                "the line's upload (the server sends every video to every participant)"
            }
            Resource::Downlink => {
                "the line's download (every participant sends its video to the server)"
            }
            Resource::Cpu => "the CPU (the videobridge forwards and re-encrypts every packet)",
            Resource::Ram => "the RAM (the Java heaps of the videobridge and jicofo)",
        })
    }
}

/// A JVM's maximum heap (-Xmx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heap {
    pub heap_mb: u32,
}

/// The swap file to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    pub size_mb: u32,
}

/// config.js settings, named in the file exactly as config.js names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigJsCaps {
    /// Capture and send height (`resolution`, `constraints.video.height` ideal and max).
    pub resolution: u32,
    /// Videos forwarded to each receiver.
    pub channel_last_n: u32,
    /// Tiles shown at full resolution in tile view.
    pub max_full_resolution_participants: u32,
    /// Participants after this many join with the microphone off.
    pub start_audio_muted: u32,
    /// Participants after this many join with the camera off.
    pub start_video_muted: u32,
}

/// The lowest capture height config.js asks for (`constraints.video.height.min`); a cap below it would
/// make the constraints unsatisfiable.
pub const MIN_RESOLUTION: u32 = 180;
/// The highest height a camera commonly delivers (2160p); anything above is a damaged file.
const MAX_RESOLUTION: u32 = 2160;

impl Tuning {
    /// Used when the image carries no tuning file (built before `meetbox build` wrote one, or by hand):
    /// what the builder derives for the smallest box and line it ships profiles for (`minimum-2c4g` on
    /// `cable-50-10`: 2 CPU threads, 4 GB RAM, 10 Mbit/s upload; the fixture tests keep the two equal).
    /// On a larger box this wastes capacity; the packaged defaults instead (3 GB heap each, 720p, no
    /// caps) can exhaust a small box's RAM and its line's upload, which breaks every meeting.
    pub const CONSERVATIVE: Tuning = Tuning {
        participants: 5,
        limited_by: Resource::Uplink,
        videobridge: Heap { heap_mb: 1920 },
        jicofo: Heap { heap_mb: 640 },
        swap: Swap { size_mb: 2048 },
        config_js: ConfigJsCaps {
            resolution: 360,
            channel_last_n: 4,
            max_full_resolution_participants: 2,
            start_audio_muted: 5,
            start_video_muted: 5,
        },
    };

    /// The file the image carries at /etc/meetbox/tuning.toml, as `meetbox build` writes it.
    pub fn to_toml(&self) -> String {
        let limited_by = match self.limited_by {
            Resource::Uplink => "uplink",
            Resource::Downlink => "downlink",
            Resource::Cpu => "cpu",
            Resource::Ram => "ram",
        };
        let c = &self.config_js;
        format!(
            "# Meetbox tuning, derived from the hardware and bandwidth profiles at build time.\n\
             # The first-boot agent applies it; docs/sizing.md explains every value.\n\
             participants = {}\n\
             limited_by = \"{limited_by}\"\n\
             \n\
             [videobridge]\nheap_mb = {}\n\
             \n\
             [jicofo]\nheap_mb = {}\n\
             \n\
             [swap]\nsize_mb = {}\n\
             \n\
             [config_js]\n\
             resolution = {}\n\
             channelLastN = {}\n\
             maxFullResolutionParticipants = {}\n\
             startAudioMuted = {}\n\
             startVideoMuted = {}\n",
            self.participants,
            self.videobridge.heap_mb,
            self.jicofo.heap_mb,
            self.swap.size_mb,
            c.resolution,
            c.channel_last_n,
            c.max_full_resolution_participants,
            c.start_audio_muted,
            c.start_video_muted,
        )
    }

    /// The summary line on the console.
    pub fn describe(&self) -> String {
        format!(
            "meetings of up to {} at {}p (limited by {}); heaps: videobridge {} MB, jicofo {} MB; swap {} MB",
            self.participants,
            self.config_js.resolution,
            self.limited_by.describe(),
            self.videobridge.heap_mb,
            self.jicofo.heap_mb,
            self.swap.size_mb
        )
    }
}

/// Parses and checks the text of a tuning file; errors name the key, with its table and line.
pub fn parse(text: &str) -> Result<Tuning> {
    let tuning: Tuning =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", locate(text, &e)))?;
    let resolution = tuning.config_js.resolution;
    ensure!(
        (MIN_RESOLUTION..=MAX_RESOLUTION).contains(&resolution),
        "[config_js] resolution = {resolution}: must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}"
    );
    for (key, value) in [
        ("[videobridge] heap_mb", tuning.videobridge.heap_mb),
        ("[jicofo] heap_mb", tuning.jicofo.heap_mb),
        ("[swap] size_mb", tuning.swap.size_mb),
    ] {
        ensure!(value > 0, "{key} = 0: must be at least 1");
    }
    Ok(tuning)
}

/// The error with where it is: `line 10, [jicofo] heap_mb = "640m": invalid type: ...`. The parser's
/// own location shows the line but not the table, and `heap_mb` is in two.
fn locate(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().to_string();
    };
    if span.start == 0 {
        // A key missing from the top level: the parser points at the whole file.
        return error.message().to_string();
    }
    let before = &text[..span.start.min(text.len())];
    let number = before.matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or_default().trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .filter(|table| *table != line);
    match table {
        Some(table) => format!("line {number}, {table} {line}: {}", error.message()),
        None => format!("line {number}, {line}: {}", error.message()),
    }
}

/// Reads the image's tuning file; when the image has none, says so on the console and returns
/// [`Tuning::CONSERVATIVE`].
pub fn load(root: &Root) -> Result<Tuning> {
    if !root.exists(layout::TUNING_FILE) {
        println!(
            "    {} is missing (an image built without it): using conservative defaults for the smallest supported box",
            layout::TUNING_FILE
        );
        return Ok(Tuning::CONSERVATIVE);
    }
    let text = root.read_to_string(layout::TUNING_FILE)?;
    parse(&text).with_context(|| {
        format!(
            "the tuning file {} is damaged (meetbox build writes it; docs/sizing.md lists its keys)",
            layout::TUNING_FILE
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `meetbox build` writes for `minimum-2c4g` on `cable-50-10` (the builder's sizing
    /// test derives exactly [`Tuning::CONSERVATIVE`] for that box and line).
    const BUILDER_SAMPLE: &str = include_str!("../tests/fixtures/tuning.toml");

    #[test]
    fn parses_the_builders_format() {
        let tuning = parse(BUILDER_SAMPLE).unwrap();
        assert_eq!(tuning, Tuning::CONSERVATIVE);
    }

    #[test]
    fn the_written_file_parses_back_to_the_same_tuning() {
        assert_eq!(Tuning::CONSERVATIVE.to_toml(), BUILDER_SAMPLE);
        let other = Tuning {
            limited_by: Resource::Ram,
            participants: 23,
            ..Tuning::CONSERVATIVE
        };
        assert_eq!(parse(&other.to_toml()).unwrap(), other);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = BUILDER_SAMPLE.replace("startVideoMuted", "startVideoMute");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert!(
            error.contains("[config_js] startVideoMute = 5: unknown field `startVideoMute`"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_value_names_its_key_and_line() {
        let text = BUILDER_SAMPLE.replace("heap_mb = 640", "heap_mb = \"640m\"");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert!(
            error.starts_with("line 10, [jicofo] heap_mb = \"640m\": invalid type"),
            "{error}"
        );
        let text = BUILDER_SAMPLE.replace("resolution = 360", "resolution = 100");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert!(error.contains("[config_js] resolution = 100"), "{error}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let text = BUILDER_SAMPLE.replace("[swap]\nsize_mb = 2048\n", "");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert_eq!(error, "missing field `swap`");
        let text = BUILDER_SAMPLE.replace("size_mb = 2048\n", "");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert!(
            error.contains("[swap]") && error.contains("missing field `size_mb`"),
            "{error}"
        );
        let error = format!("{:#}", parse("participants = 3\n").unwrap_err());
        assert_eq!(error, "missing field `limited_by`");
    }

    #[test]
    fn a_damaged_file_names_the_file_and_no_file_means_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(load(&root).unwrap(), Tuning::CONSERVATIVE);
        let path = root.path(layout::TUNING_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "participants = 3\n").unwrap();
        let error = format!("{:#}", load(&root).unwrap_err());
        assert!(error.contains(layout::TUNING_FILE), "{error}");
        assert!(error.contains("missing field"), "{error}");
    }
}
