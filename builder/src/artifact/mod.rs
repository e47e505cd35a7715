//! What a build publishes beside the image, and the formats that let it be checked and written
//! fast: the artifact file names, the block map, the zstd frames and their seek table, the
//! manifest and `SHA256SUMS`.

pub mod blockmap;
pub mod checksums;
pub mod compress;
pub mod files;
pub mod manifest;
pub mod seek_table;
