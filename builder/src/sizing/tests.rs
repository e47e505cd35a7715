//! The sizing model against published points, and the tuning and reports built on it.

use super::report::*;
use super::tuning::*;
use super::*;
use crate::profile::sections::{load_bandwidth, load_hardware};
use crate::profile::Firmware;

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
    assert!(c.start_audio_muted <= AUDIO_MUTED_AFTER && c.start_audio_muted <= tuning.participants);
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
fn the_smallest_box_gets_the_agents_conservative_defaults() {
    // The agent falls back to exactly these values when an image has no tuning file; a change of
    // the model must be carried into `Tuning::CONSERVATIVE` (firstboot/src/tuning.rs).
    let smallest = tuning(
        &load_hardware(&profiles_dir(), "minimum-2c4g").unwrap(),
        &load_bandwidth(&profiles_dir(), "cable-50-10").unwrap(),
    );
    assert_eq!(smallest, Tuning::CONSERVATIVE);
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
