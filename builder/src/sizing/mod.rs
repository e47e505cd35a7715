//! Sizing: how many people a box on a given line can host, what a meeting of a
//! given size needs (the model, here), the settings the image gets from it ([`tuning`]), and
//! `meetbox size` ([`report`]).
//!
//! The model, its sources and the published points it is checked against are in
//! docs/sizing.md. Everything here is pure except [`report::run`], which reads profiles and
//! prints. The hardware and bandwidth sections themselves are the profile's
//! ([`crate::profile::sections`]).

pub mod report;
#[cfg(test)]
mod tests;
pub mod tuning;

use std::fmt;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::profile::sections::{Bandwidth, Hardware};
pub use report::{run, SizeArgs};
pub use tuning::{capacity_warning, tuning, Tuning};

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

pub use meetbox_firstboot::tuning::Resource;

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
