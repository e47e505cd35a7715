//! `meetbox build`: profile in, signed bootable image out. Each step is one module;
//! this file only orders them and logs every step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::profile::{default_profiles_dir, Base, Profile};
use crate::{compress, disk, esp, ext4, hosttools, layout, progress, rootfs, tree};

/// Build a signed, compressed, bootable disk image from a profile.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    meetbox build                                  default profile into out/\n  \
    meetbox build --profile test --base debian-12 --out /srv/images\n  \
    meetbox build --hardware nuc-i5 --bandwidth fibre-250-250 --key ~/keys/meetbox.key\n\n\
    Needs root (mmdebstrap); run as a normal user it asks sudo for that step.")]
pub struct BuildArgs {
    /// Profile name (in profiles/) or path to a .toml file.
    #[arg(long, default_value = "default")]
    pub profile: String,
    /// Override the profile's base: ubuntu-24.04 or debian-12.
    #[arg(long)]
    pub base: Option<Base>,
    /// Hardware profile name (profiles/hardware/) or path, replacing the profile's.
    #[arg(long)]
    pub hardware: Option<String>,
    /// Bandwidth profile name (profiles/bandwidth/) or path, replacing the profile's.
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Directory for the artifacts.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// minisign secret key (default: meetbox.key in your config directory, created if missing).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// File holding the key's password (when there is no terminal to ask on).
    #[arg(long, env = "MEETBOX_KEY_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Root file system cache (default /var/cache/meetbox or $MEETBOX_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Directory of profiles (default ./profiles, else the source tree's).
    #[arg(long)]
    pub profiles_dir: Option<PathBuf>,
    /// Files placed in the image (default: the source tree's overlay/).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// The first-boot agent binary (default: built from the source tree, statically linked).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// zstd level (1-19); the output does not depend on the thread count.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Install missing host tools with apt-get instead of naming them.
    #[arg(long)]
    pub install_host_tools: bool,
}

/// The source tree this binary was built from (for profiles, overlay, agent).
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let profiles_dir = args
        .profiles_dir
        .clone()
        .unwrap_or_else(default_profiles_dir);
    let profile = load_profile(args, &profiles_dir)?;
    progress::step(format!(
        "Profile {} ({}): {}",
        profile.name, profile.base, profile.description
    ));
    hosttools::ensure(hosttools::BUILD_TOOLS, args.install_host_tools && is_root())?;
    let agent = match &args.agent {
        Some(path) => path.clone(),
        None => build_agent()?,
    };
    if !is_root() {
        return reexec_with_sudo(args, &agent);
    }
    if args.install_host_tools {
        hosttools::ensure(hosttools::BUILD_TOOLS, true)?;
    }
    let overlay = args
        .overlay
        .clone()
        .unwrap_or_else(|| source_tree().join("overlay"));
    let cache_dir = args.cache_dir.clone().unwrap_or_else(rootfs::default_cache_dir);
    todo_pipeline(&profile, &agent, &overlay, &cache_dir, args)
}

fn load_profile(args: &BuildArgs, profiles_dir: &Path) -> Result<Profile> {
    let mut profile = Profile::load(&args.profile, profiles_dir)?;
    if let Some(base) = args.base {
        profile.base = base;
    }
    if let Some(hardware) = &args.hardware {
        profile = profile.with_hardware(hardware, profiles_dir)?;
    }
    if let Some(bandwidth) = &args.bandwidth {
        profile = profile.with_bandwidth(bandwidth, profiles_dir)?;
    }
    Ok(profile)
}

fn todo_pipeline(
    profile: &Profile,
    agent: &Path,
    overlay: &Path,
    cache_dir: &Path,
    args: &BuildArgs,
) -> Result<()> {
    let _ = (profile, agent, overlay, cache_dir, args);
    let _ = (compress::compress, disk::create_sparse_image, layout::DiskLayout::plan);
    let _ = (esp::write_esp, ext4::make_root_fs, tree::customize);
    let _ = Sha256::new();
    bail!("pipeline not wired yet")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Builds the first-boot agent from the source tree, statically linked so the
/// same binary runs on Ubuntu 24.04 and Debian 12 whatever the build host's glibc.
fn build_agent() -> Result<PathBuf> {
    let manifest = source_tree().join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no first-boot agent: pass --agent PATH (a statically linked meetbox-firstboot), \
             or run from the Meetbox source tree"
        );
    }
    progress::step("First-boot agent: cargo build (static, release)");
    let target = "x86_64-unknown-linux-gnu";
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "meetbox-firstboot"])
        .args(["--target", target, "--manifest-path"])
        .arg(&manifest)
        // With an explicit --target these flags reach only the agent, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("cannot run cargo to build the first-boot agent: pass --agent PATH")?;
    if !status.success() {
        bail!("building the first-boot agent failed ({status})");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| source_tree().join("target"));
    let agent = target_dir
        .join(target)
        .join("release/meetbox-firstboot");
    if !agent.is_file() {
        bail!("cargo did not produce {}", agent.display());
    }
    Ok(agent.canonicalize()?)
}

/// mmdebstrap needs root: run the rest of the build under sudo, with the paths
/// resolved as the invoking user (agent, key) passed explicitly.
fn reexec_with_sudo(args: &BuildArgs, agent: &Path) -> Result<()> {
    progress::step("Building the root file system needs root: continuing under sudo");
    let exe = std::env::current_exe()?;
    let mut command = Command::new("sudo");
    command
        .arg("--preserve-env=MEETBOX_KEY_PASSWORD_FILE,MEETBOX_CACHE_DIR,SOURCE_DATE_EPOCH")
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .arg("--agent")
        .arg(agent);
    if args.key.is_none() {
        // Keep the key in the invoking user's config directory, not root's.
        let key = crate::keys::default_secret_key_path(&crate::keys::user_config_dir()?);
        command.arg("--key").arg(key);
    }
    let status = command.status().context("cannot run sudo")?;
    if !status.success() {
        bail!("the build under sudo failed ({status})");
    }
    Ok(())
}
