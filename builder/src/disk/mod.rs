//! The disk image: the partition layout (pure), the GPT and protective MBR, the ESP (FAT with the
//! signed boot chain) and the root file system (ext4 written from the tree).

pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod layout;
