//! The settings an image gets from its hardware and bandwidth: the videobridge's and jicofo's
//! heaps, the swap file, and config.js's caps. The schema and its file are the on-box crate's
//! (`meetbox_firstboot::tuning`, read at `/etc/meetbox/tuning.toml`); this derives the values.

pub use meetbox_firstboot::tuning::{ConfigJsCaps, Heap, Swap, Tuning};

use super::*;

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
