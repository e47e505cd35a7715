//! Placeholder types until the sizing model lands (replaced by the sizing branch).

use serde::{Deserialize, Serialize};

/// The box the image runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub cores: u32,
    pub ram_gb: u32,
    pub storage_gb: u32,
    #[serde(default)]
    pub firmware: Vec<String>,
}

/// The line the box is connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    pub uplink_mbps: u32,
    pub downlink_mbps: u32,
}
