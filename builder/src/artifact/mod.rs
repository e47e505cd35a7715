//! What a build publishes beside the image, and the formats that let it be checked and written
//! fast: the artifact file names, the block map, the zstd frames and their seek table, the
//! manifest and `SHA256SUMS`, and the seal the image carries for its own USB installer.

pub mod blockmap;
pub mod checksums;
pub mod compress;
pub mod files;
pub mod frame_cache;
pub mod manifest;
pub mod seal;
pub mod seek_table;
