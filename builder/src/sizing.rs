//! Sizing: how many people a box on a given line can host, what a meeting of a
//! given size needs, and the settings (heaps, swap, config.js caps) the image gets.
//!
//! The model, its sources and the published points it is checked against are in
//! docs/sizing.md. Everything here is pure except the profile loaders and [`run`],
//! which read files and print.

use std::fmt;
use std::path::Path;

use crate::profile::is_package_name;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

// Model constants; docs/sizing.md gives the source or the reasoning of each.

/// Bitrate the Jitsi handbook asks to provision per 180p video stream, Mbit/s.
const VIDEO_180P_MBPS: f64 = 0.2;
/// Bitrate the Jitsi handbook asks to provision per 360p video stream, Mbit/s.
const VIDEO_360P_MBPS: f64 = 0.5;
/// Bitrate the Jitsi handbook asks to provision per 720p video stream, Mbit/s.
const VIDEO_720P_MBPS: f64 = 2.5;
/// One Opus voice stream with its IP/UDP/RTP headers, Mbit/s.
const AUDIO_MBPS: f64 = 0.05;
/// Share of a line's nominal rate a meeting may use: home lines rarely deliver
/// their nominal rate, and other traffic shares them.
const USABLE_LINE_SHARE: f64 = 0.8;
/// Cores kept for prosody (single-threaded), jicofo, nginx and the system.
const RESERVED_CORES: u32 = 1;
/// Media (in + out) the videobridge may forward per remaining core, Mbit/s:
/// about 40% of the throughput per core measured in a real 9-person meeting.
const BRIDGE_MBPS_PER_CORE: f64 = 100.0;
/// RAM for the system, prosody, nginx, coturn and the page cache, MB.
const SYSTEM_RESERVE_MB: u32 = 1024;
/// Memory each JVM uses outside its heap (metaspace, threads, buffers), MB.
const JVM_OVERHEAD_MB: u32 = 256;
/// jicofo only signals; its heap stays within these bounds.
const JICOFO_HEAP_MIN_MB: u32 = 512;
const JICOFO_HEAP_MAX_MB: u32 = 1024;
/// Videobridge heap with no meeting, and what each participant adds, MB.
const VIDEOBRIDGE_HEAP_BASE_MB: u32 = 768;
const VIDEOBRIDGE_HEAP_PER_PARTICIPANT_MB: u32 = 32;
/// Larger heaps only lengthen garbage-collection pauses.
const VIDEOBRIDGE_HEAP_MAX_MB: u32 = 4096;
/// The image's resolution cap is the highest quality that still allows this many.
const SMALLEST_USEFUL_MEETING: u32 = 4;
/// Jitsi's example config.js starts microphones muted after the tenth participant.
const AUDIO_MUTED_AFTER: u32 = 10;

/// The box: what the sizing model and the image need to know about the hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// CPU threads (what `nproc` shows).
    pub cores: u32,
    pub ram_gb: u32,
    pub storage_gb: u32,
    /// Firmware packages its usual NICs and GPU need, per base distribution.
    #[serde(default)]
    pub firmware: Firmware,
}

/// Firmware package names per base distribution: Debian splits firmware into
/// `firmware-*` packages in `non-free-firmware`, Ubuntu ships one `linux-firmware`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    #[serde(default)]
    pub debian: Vec<String>,
    #[serde(default)]
    pub ubuntu: Vec<String>,
}

impl Firmware {
    /// The packages for `distribution` ("debian" or "ubuntu").
    pub fn for_distribution(&self, distribution: &str) -> Result<&[String]> {
        match distribution {
            "debian" => Ok(&self.debian),
            "ubuntu" => Ok(&self.ubuntu),
            other => {
                bail!("no firmware list for distribution {other:?}: use \"debian\" or \"ubuntu\"")
            }
        }
    }
}

/// The line the box sits behind, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// What the server can send (the line's upload), Mbit/s.
    pub uplink_mbps: u32,
    /// What the server can receive (the line's download), Mbit/s.
    pub downlink_mbps: u32,
}

impl Hardware {
    /// Rejects values the model cannot use.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.cores >= 1, "hardware: cores must be at least 1");
        ensure!(self.ram_gb >= 1, "hardware: ram_gb must be at least 1");
        ensure!(
            self.storage_gb >= 1,
            "hardware: storage_gb must be at least 1"
        );
        for name in self.firmware.debian.iter().chain(&self.firmware.ubuntu) {
            ensure!(
                is_package_name(name),
                "hardware: firmware entry {name:?} is not a package name \
                 (lower-case letters, digits, '+', '-', '.')"
            );
        }
        Ok(())
    }
}

impl Bandwidth {
    /// Rejects values the model cannot use.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.uplink_mbps >= 1 && self.downlink_mbps >= 1,
            "bandwidth: uplink_mbps and downlink_mbps must be at least 1"
        );
        Ok(())
    }
}

/// Parses a hardware profile (the keys of `Hardware` at top level).
pub fn parse_hardware(text: &str) -> Result<Hardware> {
    let hardware: Hardware = toml::from_str(text).context("invalid hardware profile")?;
    hardware.validate()?;
    Ok(hardware)
}

/// Parses a bandwidth profile (the keys of `Bandwidth` at top level).
pub fn parse_bandwidth(text: &str) -> Result<Bandwidth> {
    let bandwidth: Bandwidth = toml::from_str(text).context("invalid bandwidth profile")?;
    bandwidth.validate()?;
    Ok(bandwidth)
}

/// Loads `PROFILES/hardware/NAME.toml`.
pub fn load_hardware(profiles: &Path, name: &str) -> Result<Hardware> {
    let text = read_named(profiles, "hardware", name)?;
    parse_hardware(&text).with_context(|| format!("in hardware profile {name:?}"))
}

/// Loads `PROFILES/bandwidth/NAME.toml`.
pub fn load_bandwidth(profiles: &Path, name: &str) -> Result<Bandwidth> {
    let text = read_named(profiles, "bandwidth", name)?;
    parse_bandwidth(&text).with_context(|| format!("in bandwidth profile {name:?}"))
}

/// Reads a named profile of `kind`, listing the available names when it is missing.
fn read_named(profiles: &Path, kind: &str, name: &str) -> Result<String> {
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{kind} profile name {name:?} may hold only letters, digits, '-' and '_'"
    );
    let dir = profiles.join(kind);
    let path = dir.join(format!("{name}.toml"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut known: Vec<String> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok())
                        .filter_map(|entry| {
                            let file = entry.file_name().into_string().ok()?;
                            file.strip_suffix(".toml").map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            bail!(
                "no {kind} profile {name:?} ({} does not exist); available: {}",
                path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Stage-view quality: the resolution of the speaker everyone watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Quality {
    #[value(name = "720p")]
    #[serde(rename = "720p")]
    P720,
    #[value(name = "360p")]
    #[serde(rename = "360p")]
    P360,
    #[value(name = "180p")]
    #[serde(rename = "180p")]
    P180,
}

impl Quality {
    /// Best first.
    pub const ALL: [Quality; 3] = [Quality::P720, Quality::P360, Quality::P180];

    /// Frame height, the value config.js takes.
    pub fn height(self) -> u32 {
        match self {
            Quality::P720 => 720,
            Quality::P360 => 360,
            Quality::P180 => 180,
        }
    }

    /// Provisioned bitrate of one stream at this quality, Mbit/s.
    fn stream_mbps(self) -> f64 {
        match self {
            Quality::P720 => VIDEO_720P_MBPS,
            Quality::P360 => VIDEO_360P_MBPS,
            Quality::P180 => VIDEO_180P_MBPS,
        }
    }

    /// What a simulcast sender uploads when the cap is this quality: every layer
    /// up to it, since the bridge picks a layer per receiver.
    fn simulcast_upload_mbps(self) -> f64 {
        Quality::ALL
            .iter()
            .filter(|layer| layer.height() <= self.height())
            .map(|layer| layer.stream_mbps())
            .sum()
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}p", self.height())
    }
}

/// Media through the server for one meeting, Mbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Traffic {
    /// Sum of what participants upload: the server's download.
    pub into_server_mbps: f64,
    /// Sum of what participants receive: the server's upload.
    pub out_of_server_mbps: f64,
}

/// Media of a meeting of `participants` in stage view at `quality`: each sends its
/// simulcast layers and voice; each receives the speaker at `quality`, everyone
/// else as a 180p thumbnail, and everyone's voice.
pub fn traffic(participants: u32, quality: Quality) -> Traffic {
    if participants < 2 {
        return Traffic {
            into_server_mbps: 0.0,
            out_of_server_mbps: 0.0,
        };
    }
    let n = f64::from(participants);
    let per_sender = quality.simulcast_upload_mbps() + AUDIO_MBPS;
    let per_receiver = quality.stream_mbps() + (n - 2.0) * VIDEO_180P_MBPS + (n - 1.0) * AUDIO_MBPS;
    Traffic {
        into_server_mbps: n * per_sender,
        out_of_server_mbps: n * per_receiver,
    }
}

/// A resource that can cap the size of a meeting.
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
    fn advice(self) -> &'static str {
        match self {
            Resource::Uplink => "a line with a faster upload, or a lower resolution",
            Resource::Downlink => "a line with a faster download, or a lower resolution",
            Resource::Cpu => "a box with more cores, or a lower resolution",
            Resource::Ram => "a box with more RAM",
        }
    }
}

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

/// How much of each resource a meeting uses (1.0 = all that may be planned).
fn load(
    participants: u32,
    quality: Quality,
    hardware: &Hardware,
    bandwidth: &Bandwidth,
) -> [(Resource, f64); 4] {
    let traffic = traffic(participants, quality);
    let throughput = traffic.into_server_mbps + traffic.out_of_server_mbps;
    [
        (
            Resource::Uplink,
            traffic.out_of_server_mbps / usable_mbps(bandwidth.uplink_mbps),
        ),
        (
            Resource::Downlink,
            traffic.into_server_mbps / usable_mbps(bandwidth.downlink_mbps),
        ),
        (Resource::Cpu, throughput / bridge_mbps(hardware.cores)),
        (
            Resource::Ram,
            f64::from(participants) / f64::from(participants_by_ram(hardware.ram_gb)),
        ),
    ]
}

fn usable_mbps(line_mbps: u32) -> f64 {
    f64::from(line_mbps) * USABLE_LINE_SHARE
}

fn bridge_mbps(cores: u32) -> f64 {
    f64::from(cores.saturating_sub(RESERVED_CORES)) * BRIDGE_MBPS_PER_CORE
}

/// The resource a meeting overloads most, if any.
fn overloaded(
    participants: u32,
    quality: Quality,
    hardware: &Hardware,
    bandwidth: &Bandwidth,
) -> Option<Resource> {
    load(participants, quality, hardware, bandwidth)
        .into_iter()
        .filter(|(_, share)| *share > 1.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(resource, _)| resource)
}

/// The largest meeting that fits, and what stops the next participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// 0 when not even two people fit.
    pub participants: u32,
    pub limited_by: Resource,
}

/// The largest stage-view meeting at `quality` the box and line hold.
pub fn capacity(hardware: &Hardware, bandwidth: &Bandwidth, quality: Quality) -> Capacity {
    // Terminates: the videobridge heap is bounded, so RAM overloads at some size.
    let mut fitting = 1;
    loop {
        if let Some(limited_by) = overloaded(fitting + 1, quality, hardware, bandwidth) {
            let participants = if fitting < 2 { 0 } else { fitting };
            return Capacity {
                participants,
                limited_by,
            };
        }
        fitting += 1;
    }
}

/// (jicofo heap, heap the videobridge may have) for a box with `ram_gb`, MB.
fn heaps_mb(ram_gb: u32) -> (u32, u32) {
    let available = ram_gb
        .saturating_mul(1024)
        .saturating_sub(SYSTEM_RESERVE_MB + 2 * JVM_OVERHEAD_MB);
    let jicofo = (available / 4).clamp(JICOFO_HEAP_MIN_MB, JICOFO_HEAP_MAX_MB);
    let videobridge = available
        .saturating_sub(jicofo)
        .min(VIDEOBRIDGE_HEAP_MAX_MB);
    (jicofo, videobridge)
}

/// Participants the videobridge heap a box can afford holds.
fn participants_by_ram(ram_gb: u32) -> u32 {
    let (_, videobridge) = heaps_mb(ram_gb);
    videobridge.saturating_sub(VIDEOBRIDGE_HEAP_BASE_MB) / VIDEOBRIDGE_HEAP_PER_PARTICIPANT_MB
}

/// What the server needs for a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Needs {
    pub uplink_mbps: u32,
    pub downlink_mbps: u32,
    pub cores: u32,
    pub ram_gb: u32,
}

/// The smallest line and box that hold `participants` in stage view at `quality`.
pub fn needs(participants: u32, quality: Quality) -> Result<Needs> {
    let most = participants_by_ram(u32::MAX);
    ensure!(
        (2..=most).contains(&participants),
        "a Meetbox runs one videobridge, which holds meetings of 2 to {most} participants; \
         {participants} asked for"
    );
    let traffic = traffic(participants, quality);
    let line = |mbps: f64| (mbps / USABLE_LINE_SHARE).ceil() as u32;
    let throughput = traffic.into_server_mbps + traffic.out_of_server_mbps;
    let cores = RESERVED_CORES + ((throughput / BRIDGE_MBPS_PER_CORE).ceil() as u32).max(1);
    let ram_gb = (1..)
        .find(|&gb| participants_by_ram(gb) >= participants)
        .context("the RAM search is bounded by the heap limit checked above")?;
    Ok(Needs {
        uplink_mbps: line(traffic.out_of_server_mbps),
        downlink_mbps: line(traffic.into_server_mbps),
        cores,
        ram_gb,
    })
}

/// Settings the image gets from its hardware and bandwidth profiles; carried at
/// /etc/meetbox/tuning.toml and applied by the first-boot agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// Largest meeting at the capped resolution with every video visible.
    pub participants: u32,
    pub limited_by: Resource,
    pub videobridge: Heap,
    pub jicofo: Heap,
    pub swap: Swap,
    pub config_js: ConfigJsCaps,
}

/// A JVM's maximum heap (-Xmx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heap {
    pub heap_mb: u32,
}

/// The swap file the agent creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    pub size_mb: u32,
}

/// config.js settings, named exactly as config.js names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigJsCaps {
    /// Capture and send height (`resolution`, `constraints.video.height.max`).
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

/// Derives the image's settings from the box and its line.
pub fn tuning(hardware: &Hardware, bandwidth: &Bandwidth) -> Tuning {
    let by_quality = Quality::ALL.map(|quality| (quality, capacity(hardware, bandwidth, quality)));
    let (quality, capacity) = by_quality
        .iter()
        .copied()
        .find(|(_, capacity)| capacity.participants >= SMALLEST_USEFUL_MEETING)
        .unwrap_or_else(|| {
            // Nothing reaches a useful size: take whatever holds the most people.
            by_quality
                .iter()
                .copied()
                .reduce(|best, next| {
                    if next.1.participants > best.1.participants {
                        next
                    } else {
                        best
                    }
                })
                .unwrap_or((
                    Quality::P180,
                    Capacity {
                        participants: 0,
                        limited_by: Resource::Uplink,
                    },
                ))
        });
    let (jicofo, videobridge) = heaps_mb(hardware.ram_gb);
    let participants = capacity.participants;
    Tuning {
        participants,
        limited_by: capacity.limited_by,
        videobridge: Heap {
            heap_mb: videobridge.max(VIDEOBRIDGE_HEAP_BASE_MB),
        },
        jicofo: Heap { heap_mb: jicofo },
        swap: Swap {
            size_mb: swap_mb(hardware.ram_gb),
        },
        config_js: ConfigJsCaps {
            resolution: quality.height(),
            channel_last_n: participants.saturating_sub(1),
            max_full_resolution_participants: full_resolution_participants(
                hardware,
                bandwidth,
                quality,
                participants,
            ),
            start_audio_muted: participants.min(AUDIO_MUTED_AFTER),
            start_video_muted: participants,
        },
    }
}

/// Small boxes run close to their heap sum: swap keeps rarely used pages (apt,
/// journald) from pushing the heaps out; large boxes need only a little.
fn swap_mb(ram_gb: u32) -> u32 {
    match ram_gb {
        0..=4 => 2048,
        5..=8 => 1024,
        _ => 512,
    }
}

/// How many tiles may stay at full resolution in tile view: the speaker, plus as
/// many upgrades from a thumbnail as the spare upload and CPU at full capacity pay for.
fn full_resolution_participants(
    hardware: &Hardware,
    bandwidth: &Bandwidth,
    quality: Quality,
    participants: u32,
) -> u32 {
    let others = participants.saturating_sub(1);
    let upgrade_mbps = quality.stream_mbps() - VIDEO_180P_MBPS;
    if others == 0 || upgrade_mbps <= 0.0 {
        return others;
    }
    let traffic = traffic(participants, quality);
    let n = f64::from(participants);
    let spare_uplink = usable_mbps(bandwidth.uplink_mbps) - traffic.out_of_server_mbps;
    let spare_cpu =
        bridge_mbps(hardware.cores) - traffic.into_server_mbps - traffic.out_of_server_mbps;
    let spare_per_receiver = spare_uplink.min(spare_cpu).max(0.0) / n;
    let upgrades = (spare_per_receiver / upgrade_mbps).floor() as u32;
    (1 + upgrades).min(others)
}

impl Tuning {
    /// The file the image carries at /etc/meetbox/tuning.toml.
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
}

/// A warning for `meetbox build` when the profile cannot hold the meeting size
/// asked for (or, when none was asked for, not even a small meeting).
pub fn capacity_warning(tuning: &Tuning, wanted_participants: Option<u32>) -> Option<String> {
    let holds = tuning.participants;
    let resolution = tuning.config_js.resolution;
    let wanted = wanted_participants.unwrap_or(SMALLEST_USEFUL_MEETING);
    if holds >= wanted {
        return None;
    }
    let asked = match wanted_participants {
        Some(wanted) => format!("{wanted} were asked for"),
        None => format!("a meeting of {wanted} does not fit"),
    };
    Some(format!(
        "this box and line hold about {holds} participants at {resolution}p; {asked}. \
         Limited by {}. For more, use {} (see `meetbox size --participants {wanted}`).",
        tuning.limited_by,
        tuning.limited_by.advice()
    ))
}

/// `meetbox size`: capacity of a box on a line, or the needs of a meeting.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    meetbox size --uplink-mbps 40 --downlink-mbps 100 --cores 4 --ram-gb 8\n  \
    meetbox size --hardware n100-8gb --bandwidth fibre-100-40 --json\n  \
    meetbox size --participants 15 --quality 720p\n\n\
    The model and its sources: docs/sizing.md")]
pub struct SizeArgs {
    /// The line's upload in Mbit/s (what the server can send).
    #[arg(long, value_name = "MBIT/S", conflicts_with_all = ["participants", "bandwidth"])]
    pub uplink_mbps: Option<u32>,
    /// The line's download in Mbit/s (what the server can receive).
    #[arg(long, value_name = "MBIT/S", conflicts_with_all = ["participants", "bandwidth"])]
    pub downlink_mbps: Option<u32>,
    /// CPU threads of the box.
    #[arg(long, conflicts_with_all = ["participants", "hardware"])]
    pub cores: Option<u32>,
    /// RAM of the box in GB.
    #[arg(long, value_name = "GB", conflicts_with_all = ["participants", "hardware"])]
    pub ram_gb: Option<u32>,
    /// A hardware profile (profiles/hardware/NAME.toml) instead of --cores/--ram-gb.
    #[arg(long, value_name = "NAME", conflicts_with = "participants")]
    pub hardware: Option<String>,
    /// A bandwidth profile (profiles/bandwidth/NAME.toml) instead of --uplink-mbps/--downlink-mbps.
    #[arg(long, value_name = "NAME", conflicts_with = "participants")]
    pub bandwidth: Option<String>,
    /// Answer the other way: what a meeting of N people needs.
    #[arg(long, value_name = "N")]
    pub participants: Option<u32>,
    /// Stage-view quality for --participants.
    #[arg(long, value_enum, default_value = "720p", requires = "participants")]
    pub quality: Quality,
    /// Directory holding the hardware/ and bandwidth/ profiles.
    #[arg(long, value_name = "DIR", default_value = "profiles")]
    pub profiles: std::path::PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Runs `meetbox size`.
pub fn run(args: &SizeArgs) -> Result<()> {
    let output = match args.participants {
        Some(participants) => {
            let report = NeedsReport::new(participants, args.quality)?;
            if args.json {
                serde_json::to_string_pretty(&report).context("cannot encode the report as JSON")?
            } else {
                report.human()
            }
        }
        None => {
            let hardware = hardware_from_args(args)?;
            let bandwidth = bandwidth_from_args(args)?;
            let report = CapacityReport::new(&hardware, &bandwidth);
            if args.json {
                serde_json::to_string_pretty(&report).context("cannot encode the report as JSON")?
            } else {
                report.human()
            }
        }
    };
    println!("{output}");
    Ok(())
}

fn hardware_from_args(args: &SizeArgs) -> Result<Hardware> {
    let hardware = match (&args.hardware, args.cores, args.ram_gb) {
        (Some(name), _, _) => return load_hardware(&args.profiles, name),
        (None, Some(cores), Some(ram_gb)) => Hardware {
            cores,
            ram_gb,
            storage_gb: 1,
            firmware: Firmware::default(),
        },
        _ => bail!(
            "say what the box has: --cores and --ram-gb, or --hardware NAME; \
             or ask what a meeting needs with --participants N"
        ),
    };
    hardware.validate()?;
    Ok(hardware)
}

fn bandwidth_from_args(args: &SizeArgs) -> Result<Bandwidth> {
    let bandwidth = match (&args.bandwidth, args.uplink_mbps, args.downlink_mbps) {
        (Some(name), _, _) => return load_bandwidth(&args.profiles, name),
        (None, Some(uplink_mbps), Some(downlink_mbps)) => Bandwidth {
            uplink_mbps,
            downlink_mbps,
        },
        _ => bail!(
            "say what the line gives: --uplink-mbps and --downlink-mbps, or --bandwidth NAME; \
             or ask what a meeting needs with --participants N"
        ),
    };
    bandwidth.validate()?;
    Ok(bandwidth)
}

/// Participants per stage-view quality, as `meetbox size` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerQuality<T> {
    #[serde(rename = "720p")]
    pub p720: T,
    #[serde(rename = "360p")]
    pub p360: T,
    #[serde(rename = "180p")]
    pub p180: T,
}

/// What `meetbox size` says about a box on a line.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub input: Inputs,
    pub participants: PerQuality<u32>,
    /// What limits the meeting at the resolution the image is capped to.
    pub limited_by: Resource,
    pub limited_by_quality: PerQuality<Resource>,
    pub tuning: Tuning,
    /// Plain-words explanation of `limited_by`.
    pub explanation: String,
}

/// The figures a capacity report was computed from.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Inputs {
    pub uplink_mbps: u32,
    pub downlink_mbps: u32,
    pub cores: u32,
    pub ram_gb: u32,
}

impl CapacityReport {
    pub fn new(hardware: &Hardware, bandwidth: &Bandwidth) -> Self {
        let [p720, p360, p180] = Quality::ALL.map(|quality| capacity(hardware, bandwidth, quality));
        let tuning = tuning(hardware, bandwidth);
        let quality = Quality::ALL
            .into_iter()
            .find(|quality| quality.height() == tuning.config_js.resolution)
            .unwrap_or(Quality::P180);
        CapacityReport {
            input: Inputs {
                uplink_mbps: bandwidth.uplink_mbps,
                downlink_mbps: bandwidth.downlink_mbps,
                cores: hardware.cores,
                ram_gb: hardware.ram_gb,
            },
            participants: PerQuality {
                p720: p720.participants,
                p360: p360.participants,
                p180: p180.participants,
            },
            limited_by: tuning.limited_by,
            limited_by_quality: PerQuality {
                p720: p720.limited_by,
                p360: p360.limited_by,
                p180: p180.limited_by,
            },
            explanation: explain_limit(hardware, bandwidth, quality, tuning.participants),
            tuning,
        }
    }

    /// The report for a person reading a terminal.
    pub fn human(&self) -> String {
        let i = &self.input;
        let t = &self.tuning;
        let c = &t.config_js;
        format!(
            "Box: {} CPU threads, {} GB RAM; line: {} Mbit/s up, {} Mbit/s down.\n\
             \n\
             Participants in one meeting, everyone's video visible:\n  \
               720p stage view: {:>3}  (limited by {})\n  \
               360p stage view: {:>3}  (limited by {})\n  \
               180p stage view: {:>3}  (limited by {})\n\
             \n\
             The image caps video at {}p. {}\n\
             \n\
             Settings the image gets (/etc/meetbox/tuning.toml):\n  \
               videobridge heap                 {} MB\n  \
               jicofo heap                      {} MB\n  \
               swap                             {} MB\n  \
               config.js resolution             {}\n  \
               config.js channelLastN           {}\n  \
               maxFullResolutionParticipants    {}\n  \
               startAudioMuted / startVideoMuted {} / {}",
            i.cores,
            i.ram_gb,
            i.uplink_mbps,
            i.downlink_mbps,
            self.participants.p720,
            short_name(self.limited_by_quality.p720),
            self.participants.p360,
            short_name(self.limited_by_quality.p360),
            self.participants.p180,
            short_name(self.limited_by_quality.p180),
            c.resolution,
            self.explanation,
            t.videobridge.heap_mb,
            t.jicofo.heap_mb,
            t.swap.size_mb,
            c.resolution,
            c.channel_last_n,
            c.max_full_resolution_participants,
            c.start_audio_muted,
            c.start_video_muted,
        )
    }
}

fn short_name(resource: Resource) -> &'static str {
    match resource {
        Resource::Uplink => "upload",
        Resource::Downlink => "download",
        Resource::Cpu => "CPU",
        Resource::Ram => "RAM",
    }
}

/// Why one more participant does not fit, with the figures.
fn explain_limit(
    hardware: &Hardware,
    bandwidth: &Bandwidth,
    quality: Quality,
    participants: u32,
) -> String {
    let next = participants.max(1) + 1;
    let traffic = traffic(next, quality);
    let Some(resource) = overloaded(next, quality, hardware, bandwidth) else {
        return format!("{next} participants would fit as well.");
    };
    let figures = match resource {
        Resource::Uplink => format!(
            "{next} participants would make the server send {:.0} Mbit/s, more than the {:.0} Mbit/s \
             it may use of the {} Mbit/s upload ({:.0}% of the line).",
            traffic.out_of_server_mbps,
            usable_mbps(bandwidth.uplink_mbps),
            bandwidth.uplink_mbps,
            USABLE_LINE_SHARE * 100.0
        ),
        Resource::Downlink => format!(
            "{next} participants would send the server {:.0} Mbit/s, more than the {:.0} Mbit/s \
             it may use of the {} Mbit/s download ({:.0}% of the line).",
            traffic.into_server_mbps,
            usable_mbps(bandwidth.downlink_mbps),
            bandwidth.downlink_mbps,
            USABLE_LINE_SHARE * 100.0
        ),
        Resource::Cpu => format!(
            "{next} participants would make the videobridge forward {:.0} Mbit/s, more than the {:.0} Mbit/s \
             its {} cores may carry (one core stays with prosody and jicofo).",
            traffic.into_server_mbps + traffic.out_of_server_mbps,
            bridge_mbps(hardware.cores),
            hardware.cores.saturating_sub(RESERVED_CORES)
        ),
        Resource::Ram => format!(
            "{next} participants would need more videobridge heap than {} GB of RAM leaves \
             after the system, prosody and jicofo.",
            hardware.ram_gb
        ),
    };
    format!(
        "The limit is {resource}: {figures} For more, use {}.",
        resource.advice()
    )
}

/// What `meetbox size --participants` says.
#[derive(Debug, Clone, Serialize)]
pub struct NeedsReport {
    pub participants: u32,
    pub quality: Quality,
    pub needs: Needs,
    /// The media behind the line figures (which add the headroom).
    pub traffic: Traffic,
}

impl NeedsReport {
    pub fn new(participants: u32, quality: Quality) -> Result<Self> {
        Ok(NeedsReport {
            participants,
            quality,
            needs: needs(participants, quality)?,
            traffic: traffic(participants, quality),
        })
    }

    /// The report for a person reading a terminal.
    pub fn human(&self) -> String {
        let n = &self.needs;
        format!(
            "A meeting of {} in {} stage view, everyone's video visible, needs:\n  \
               upload    {:>5} Mbit/s  (the server sends {:.0} Mbit/s; a line is planned at {:.0}% use)\n  \
               download  {:>5} Mbit/s  (participants send the server {:.0} Mbit/s)\n  \
               CPU       {:>5} threads (one for prosody and jicofo, the rest for the videobridge)\n  \
               RAM       {:>5} GB\n\
             At home the upload is usually what runs out first: the server sends every video to every participant.",
            self.participants,
            self.quality,
            n.uplink_mbps,
            self.traffic.out_of_server_mbps,
            USABLE_LINE_SHARE * 100.0,
            n.downlink_mbps,
            self.traffic.into_server_mbps,
            n.cores,
            n.ram_gb,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, published: f64, tolerance: f64) -> bool {
        (actual - published).abs() <= published * tolerance
    }

    fn profiles_dir() -> std::path::PathBuf {
        crate::profile::shipped_profiles_dir()
    }

    /// The guideline project's NUC-class box: 4 cores, 8 GB.
    fn nuc_class() -> Hardware {
        Hardware {
            cores: 4,
            ram_gb: 8,
            storage_gb: 256,
            firmware: Firmware::default(),
        }
    }

    #[test]
    fn a_75_mbit_line_holds_8_to_12_at_720p_limited_by_bandwidth() {
        let line = Bandwidth {
            uplink_mbps: 75,
            downlink_mbps: 75,
        };
        let capacity = capacity(&nuc_class(), &line, Quality::P720);
        assert!(
            (8..=12).contains(&capacity.participants),
            "published: 8-12 participants on 75 Mbit/s; model: {}",
            capacity.participants
        );
        // "bandwidth, not CPU or memory, limited"
        assert_eq!(capacity.limited_by, Resource::Uplink);
    }

    #[test]
    fn fifteen_participants_need_about_60_in_and_80_out() {
        let traffic = traffic(15, Quality::P720);
        assert!(
            within(traffic.into_server_mbps, 60.0, 0.25),
            "into the server: {traffic:?}"
        );
        assert!(
            within(traffic.out_of_server_mbps, 80.0, 0.25),
            "out of the server: {traffic:?}"
        );
    }

    #[test]
    fn handbook_four_gb_suits_small_meetings() {
        assert!(needs(10, Quality::P720).unwrap().ram_gb <= 4);
        let small_org = Hardware {
            cores: 4,
            ram_gb: 8,
            storage_gb: 20,
            firmware: Firmware::default(),
        };
        let fast_line = Bandwidth {
            uplink_mbps: 1000,
            downlink_mbps: 1000,
        };
        assert!(capacity(&small_org, &fast_line, Quality::P720).participants >= 20);
    }

    #[test]
    fn needs_and_capacity_agree() {
        for quality in Quality::ALL {
            for participants in [2, 3, 5, 8, 15, 30, 60, 100] {
                let needs = needs(participants, quality).unwrap();
                let hardware = Hardware {
                    cores: needs.cores,
                    ram_gb: needs.ram_gb,
                    storage_gb: 20,
                    firmware: Firmware::default(),
                };
                let line = Bandwidth {
                    uplink_mbps: needs.uplink_mbps,
                    downlink_mbps: needs.downlink_mbps,
                };
                let held = capacity(&hardware, &line, quality).participants;
                assert!(
                    held >= participants,
                    "{participants} at {quality}: needs {needs:?} hold only {held}"
                );
                let smaller = Bandwidth {
                    uplink_mbps: needs.uplink_mbps - 1,
                    ..line
                };
                assert!(
                    capacity(&hardware, &smaller, quality).participants < participants,
                    "{participants} at {quality}: the uplink asked for ({}) is more than needed",
                    needs.uplink_mbps
                );
            }
        }
    }

    #[test]
    fn meetings_beyond_one_bridge_are_refused() {
        let error = needs(1000, Quality::P180).unwrap_err().to_string();
        assert!(error.contains("one videobridge"), "{error}");
        assert!(needs(1, Quality::P720).is_err());
    }

    #[test]
    fn upload_binds_at_home_and_lower_quality_holds_more() {
        let cable = load_bandwidth(&profiles_dir(), "cable-50-10").unwrap();
        let n100 = load_hardware(&profiles_dir(), "n100-8gb").unwrap();
        let [p720, p360, p180] = Quality::ALL.map(|quality| capacity(&n100, &cable, quality));
        assert_eq!(p720.limited_by, Resource::Uplink);
        assert!(p720.participants < p360.participants && p360.participants <= p180.participants);
        let tuning = tuning(&n100, &cable);
        assert!(tuning.participants >= SMALLEST_USEFUL_MEETING);
        assert!(
            tuning.config_js.resolution < 720,
            "10 Mbit/s up cannot carry a 720p meeting of four"
        );
    }

    #[test]
    fn cpu_binds_on_the_minimum_box_behind_fast_fibre() {
        let minimum = load_hardware(&profiles_dir(), "minimum-2c4g").unwrap();
        let gigabit = load_bandwidth(&profiles_dir(), "fibre-1000-1000").unwrap();
        let tuning = tuning(&minimum, &gigabit);
        assert_eq!(tuning.limited_by, Resource::Cpu);
        // Heaps and the system fit in its 4 GB.
        let total = tuning.videobridge.heap_mb
            + tuning.jicofo.heap_mb
            + 2 * JVM_OVERHEAD_MB
            + SYSTEM_RESERVE_MB;
        assert!(total <= 4 * 1024, "heaps overcommit 4 GB: {tuning:?}");
    }

    #[test]
    fn tuning_caps_follow_capacity() {
        let n100 = load_hardware(&profiles_dir(), "n100-16gb").unwrap();
        let fibre = load_bandwidth(&profiles_dir(), "fibre-100-40").unwrap();
        let tuning = tuning(&n100, &fibre);
        let c = tuning.config_js;
        assert_eq!(c.resolution, 720);
        assert_eq!(
            tuning.participants,
            capacity(&n100, &fibre, Quality::P720).participants
        );
        assert_eq!(c.channel_last_n + 1, tuning.participants);
        assert_eq!(c.start_video_muted, tuning.participants);
        assert!(
            c.start_audio_muted <= AUDIO_MUTED_AFTER && c.start_audio_muted <= tuning.participants
        );
        assert!((1..tuning.participants).contains(&c.max_full_resolution_participants));
        assert!(tuning.videobridge.heap_mb > tuning.jicofo.heap_mb);
    }

    #[test]
    fn tuning_toml_round_trips() {
        let hardware = load_hardware(&profiles_dir(), "nuc-i5").unwrap();
        let line = load_bandwidth(&profiles_dir(), "fibre-250-250").unwrap();
        let tuning = tuning(&hardware, &line);
        let text = tuning.to_toml();
        let parsed: Tuning = toml::from_str(&text).unwrap();
        assert_eq!(parsed, tuning);
        assert!(text.contains("channelLastN = "), "{text}");
    }

    #[test]
    fn warns_when_the_wanted_meeting_does_not_fit() {
        let hardware = load_hardware(&profiles_dir(), "n100-8gb").unwrap();
        let cable = load_bandwidth(&profiles_dir(), "cable-50-10").unwrap();
        let tuning = tuning(&hardware, &cable);
        assert_eq!(capacity_warning(&tuning, Some(tuning.participants)), None);
        let warning = capacity_warning(&tuning, Some(tuning.participants + 5)).unwrap();
        assert!(warning.contains("upload"), "{warning}");
        let starved = tuning_for_line(1, 1);
        assert!(capacity_warning(&starved, None).is_some());
    }

    #[test]
    fn the_first_boot_agents_sample_is_what_the_builder_writes() {
        // The agent parses this file in its own test, and falls back to exactly these values when an
        // image has no tuning file. A change of the format or of the model must be carried into the
        // file and into `Tuning::CONSERVATIVE` in firstboot/src/tuning.rs.
        let sample = include_str!("../../firstboot/tests/fixtures/tuning.toml");
        let smallest = tuning(
            &load_hardware(&profiles_dir(), "minimum-2c4g").unwrap(),
            &load_bandwidth(&profiles_dir(), "cable-50-10").unwrap(),
        );
        assert_eq!(smallest.to_toml(), sample);
    }

    fn tuning_for_line(uplink_mbps: u32, downlink_mbps: u32) -> Tuning {
        tuning(
            &nuc_class(),
            &Bandwidth {
                uplink_mbps,
                downlink_mbps,
            },
        )
    }

    #[test]
    fn every_profile_loads() {
        for kind in ["hardware", "bandwidth"] {
            let mut count = 0;
            for entry in std::fs::read_dir(profiles_dir().join(kind)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                match kind {
                    "hardware" => {
                        let hardware = load_hardware(&profiles_dir(), &name).unwrap();
                        assert!(
                            !hardware.firmware.debian.is_empty()
                                && !hardware.firmware.ubuntu.is_empty(),
                            "{name}"
                        );
                    }
                    _ => {
                        load_bandwidth(&profiles_dir(), &name).unwrap();
                    }
                }
                count += 1;
            }
            assert!(count >= 4, "{kind}: only {count} profiles");
        }
    }

    #[test]
    fn profiles_reject_unknown_keys_and_missing_names() {
        let error =
            parse_bandwidth("uplink_mbps = 10\ndownlink_mbps = 50\nupload = 3\n").unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
        let error = parse_hardware(
            "cores = 4\nram_gb = 8\nstorage_gb = 64\n[firmware]\ndebian = [\"Bad Name\"]\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a package name"), "{error}");
        let error = load_bandwidth(&profiles_dir(), "dialup")
            .unwrap_err()
            .to_string();
        assert!(error.contains("available: cable-50-10"), "{error}");
        assert!(load_hardware(&profiles_dir(), "../bandwidth/cable-50-10").is_err());
    }

    #[test]
    fn reports_name_the_limit_in_plain_words() {
        let report = CapacityReport::new(
            &nuc_class(),
            &Bandwidth {
                uplink_mbps: 75,
                downlink_mbps: 75,
            },
        );
        let text = report.human();
        assert!(text.contains("The limit is the line's upload"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["limited_by"], "uplink");
        assert_eq!(json["participants"]["720p"], report.participants.p720);
        let needs = serde_json::to_value(NeedsReport::new(15, Quality::P720).unwrap()).unwrap();
        for key in ["uplink_mbps", "downlink_mbps", "cores", "ram_gb"] {
            assert!(needs["needs"][key].as_u64().unwrap() > 0, "{key}: {needs}");
        }
    }

    #[test]
    fn firmware_lists_are_per_distribution() {
        let hardware = load_hardware(&profiles_dir(), "n100-8gb").unwrap();
        assert!(hardware
            .firmware
            .for_distribution("ubuntu")
            .unwrap()
            .iter()
            .any(|p| p == "linux-firmware"));
        assert!(hardware
            .firmware
            .for_distribution("debian")
            .unwrap()
            .iter()
            .any(|p| p == "firmware-realtek"));
        assert!(hardware.firmware.for_distribution("arch").is_err());
    }
}
