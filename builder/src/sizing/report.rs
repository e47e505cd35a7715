//! `meetbox size`: the capacity of a box on a line, or what a meeting needs, in plain words or
//! JSON.

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::*;
use crate::profile::sections;

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
        (Some(name), _, _) => return sections::load_hardware(&args.profiles, name),
        (None, Some(cores), Some(ram_gb)) => Hardware {
            cores,
            ram_gb,
            storage_gb: 1,
            firmware: crate::profile::Firmware::default(),
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
        (Some(name), _, _) => return sections::load_bandwidth(&args.profiles, name),
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
