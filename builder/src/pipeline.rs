//! `meetbox build`: profile in, signed bootable image out. Each step is one module;
//! this file only orders them and logs every step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::files::BuildFiles;
use crate::artifact::manifest;
use crate::disk::layout::DiskLayout;
use crate::host::command::CommandRunExt;
use crate::profile::{default_profiles_dir, Base, Profile};
use crate::sign::keys::{self, SigningKey, SigningKeyArgs};
use crate::{
    artifact::compress, artifact::seal, disk::esp, disk::ext4, disk::gpt, disk::layout,
    host::progress, host::tools, publish, rootfs, rootfs::jitsi, sizing, tree, tree::hardening,
};

/// Build a signed, compressed, bootable disk image from a profile.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    meetbox build                                  default profile into out/\n  \
    meetbox build --profile test --base debian-12 --out /srv/images\n  \
    meetbox build --hardware nuc-i5 --bandwidth fibre-250-250 --key ~/keys/meetbox.key\n  \
    meetbox build --jitsi-repository http://mirror.lan/jitsi   Jitsi from a mirror of its repository\n\n\
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
    #[command(flatten)]
    pub signing: SigningKeyArgs,
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
    /// The `meetbox` binary the image carries for its USB installer (default: built from the
    /// source tree, statically linked).
    #[arg(long)]
    pub installer: Option<PathBuf>,
    /// The web admin's binary, `meetbox-admin` (default: built from the source tree, statically
    /// linked).
    #[arg(long)]
    pub admin: Option<PathBuf>,
    #[command(flatten)]
    pub jitsi: jitsi::Source,
    /// zstd level (1-19); the output does not depend on the thread count.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Install missing host tools with apt-get instead of naming them.
    #[arg(long)]
    pub install_host_tools: bool,
}

/// The source tree this binary was built from (for profiles, overlay, the on-box programs).
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
    tools::ensure(tools::BUILD_TOOLS, args.install_host_tools)?;
    // Jitsi's key and repository are checked before anything is built: a wrong key or an
    // unreachable repository stops the build within a minute.
    let jitsi = jitsi_inputs(&profile, &args.jitsi)?;
    let programs = on_box_programs(args)?;
    if !is_root() {
        return reexec_with_sudo(args, &programs);
    }
    let overlay = args
        .overlay
        .clone()
        .unwrap_or_else(|| source_tree().join("overlay"));
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(rootfs::default_cache_dir);
    fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create the cache {}", cache_dir.display()))?;
    assemble(&profile, &programs, &overlay, &cache_dir, jitsi, args)
}

/// What installs Jitsi Meet, after its checks; nothing for a profile without Jitsi.
fn jitsi_inputs(profile: &Profile, source: &jitsi::Source) -> Result<Option<jitsi::RootfsInputs>> {
    if !profile.services.jitsi {
        return Ok(None);
    }
    progress::step("Jitsi Meet: pinned archive key and repository reachability");
    let repository = jitsi::Repository::jitsi(source)?;
    let inputs = jitsi::prepare(
        &repository,
        jitsi::INTERNAL_DOMAIN,
        jitsi::REACHABILITY_TIMEOUT,
    )?;
    progress::detail(format!(
        "from {}; unattended upgrades select \"{}\"",
        repository.source_line(),
        inputs.upgrade_origin
    ));
    Ok(Some(inputs))
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

/// The steps after the checks, as root: each one logged, each one a module.
fn assemble(
    profile: &Profile,
    programs: &OnBoxPrograms,
    overlay: &Path,
    cache_dir: &Path,
    jitsi: Option<jitsi::RootfsInputs>,
    args: &BuildArgs,
) -> Result<()> {
    let started = Instant::now();
    let name = profile.artifact_name();
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output directory {}", args.out.display()))?;
    let key = keys::resolve_secret_key(&args.signing)?;

    let jitsi_upgrade_origin = jitsi.as_ref().map(|inputs| inputs.upgrade_origin.clone());
    let cached = cached_rootfs(profile, cache_dir, jitsi)?;
    // Identifiers derive from what shapes the image, so a rebuild reuses them.
    let mut seed = Sha256::new();
    seed.update(cached.key.as_bytes());
    seed.update(name.as_bytes());
    let layout = DiskLayout::plan(profile.image_size.0, profile.esp_size.0, &seed.finalize())?;

    let work = tempfile::Builder::new()
        .prefix("assemble-")
        .tempdir_in(cache_dir)
        .with_context(|| format!("cannot create a work directory in {}", cache_dir.display()))?;
    let root = work.path().join("root");
    let esp_volume_id = format!(
        "{:04X}-{:04X}",
        layout.esp_volume_id >> 16,
        layout.esp_volume_id & 0xffff
    );
    let image_signing_key = fs::read_to_string(&key.public_key_path).with_context(|| {
        format!(
            "cannot read the public key {} to place it in the image",
            key.public_key_path.display()
        )
    })?;
    let tree = RootInputs {
        profile,
        programs,
        image_signing_key: &image_signing_key,
        overlay,
        cached: &cached,
        layout: &layout,
        esp_volume_id: &esp_volume_id,
        jitsi_upgrade_origin: jitsi_upgrade_origin.as_deref(),
    };
    let (packages, updates) = prepare_root(&root, &tree)?;
    let raw = work.path().join(format!("{name}.img"));
    write_raw_image(&root, &raw, profile, &layout, cached.epoch, &key)?;

    let description = publish::Description {
        name: name.clone(),
        base: profile.base.to_string(),
        profile: serde_json::to_value(profile)?,
        packages,
        disk: manifest_disk(&layout, &esp_volume_id),
        source_date_epoch: cached.epoch,
        updates,
    };
    let compressed = publish::publish(
        &raw,
        &args.out,
        description,
        &key,
        args.compression_level,
        publish::Framing::Frames {
            size: compress::FRAME_SIZE,
            cache: Some(&cache_dir.join("frames").join(&name)),
        },
    )?;
    fs::remove_file(&raw)?;
    give_back_to_invoking_user(&args.out)?;
    let timings = progress::step_timings();
    progress::step(format!(
        "Done in {:.0} s: {} ({} compressed from {}), signed with {}",
        started.elapsed().as_secs_f64(),
        BuildFiles::new(&args.out, &name).image_zst().display(),
        progress::human_bytes(compressed.compressed_size),
        progress::human_bytes(compressed.raw_size),
        key.public_key_path.display()
    ));
    progress::detail("where the time went (each step until the next):");
    for line in timings {
        progress::detail(line);
    }
    Ok(())
}

/// The profile's root file system from the cache, built first if needed; Jitsi's
/// hooks run before the clean-up hook, which removes apt's package lists.
fn cached_rootfs(
    profile: &Profile,
    cache_dir: &Path,
    jitsi: Option<jitsi::RootfsInputs>,
) -> Result<rootfs::CachedRootfs> {
    let mut recipe = rootfs::Recipe::for_profile(profile);
    if let Some(inputs) = jitsi {
        recipe.customize_hooks.splice(0..0, inputs.customize_hooks);
    }
    rootfs::ensure_cached(&recipe, cache_dir)
}

/// What the root tree is made from.
struct RootInputs<'a> {
    profile: &'a Profile,
    programs: &'a OnBoxPrograms,
    /// The public key this build signs with, for the installer's check of a stick.
    image_signing_key: &'a str,
    overlay: &'a Path,
    cached: &'a rootfs::CachedRootfs,
    layout: &'a DiskLayout,
    esp_volume_id: &'a str,
    jitsi_upgrade_origin: Option<&'a str>,
}

/// Unpacks the cached root into `root` and makes it this image's (tree::customize); returns
/// the installed packages and the update policy, for the manifest.
fn prepare_root(
    root: &Path,
    inputs: &RootInputs,
) -> Result<(Vec<manifest::Package>, manifest::Updates)> {
    let profile = inputs.profile;
    fs::create_dir(root)?;
    progress::step("Root tree: unpacking the cached root file system");
    rootfs::unpack(&inputs.cached.tarball, root)?;
    for glob in rootfs::firmware::unmatched(root, &profile.hardware.firmware.files) {
        progress::detail(format!(
            "warning: the hardware profile names firmware {glob:?}, but the image has no such \
             file under /lib/firmware: that device will not work; check the name against \
             linux-firmware's files"
        ));
    }
    let tuning = sizing::tuning(&profile.hardware, &profile.bandwidth);
    if let Some(warning) = sizing::capacity_warning(&tuning, profile.participants) {
        progress::detail(format!("warning: {warning}"));
    }
    tree::customize(
        root,
        &tree::TreeInputs {
            profile,
            overlay: inputs.overlay,
            agent: &inputs.programs.agent,
            installer: &inputs.programs.installer,
            admin: &inputs.programs.admin,
            root_fs_uuid: inputs.layout.root_fs_uuid.to_string(),
            esp_volume_id: inputs.esp_volume_id.to_string(),
            jitsi_upgrade_origin: inputs.jitsi_upgrade_origin.map(str::to_string),
            extra_files: [
                (
                    meetbox_firstboot::layout::TUNING_FILE
                        .trim_start_matches('/')
                        .into(),
                    tuning.to_toml(),
                ),
                (
                    meetbox_firstboot::layout::IMAGE_SIGNING_KEY
                        .trim_start_matches('/')
                        .into(),
                    inputs.image_signing_key.to_string(),
                ),
            ]
            .into_iter()
            .chain(profile.services.admin_from_internet.then(|| {
                (
                    meetbox_firstboot::layout::ADMIN_FROM_INTERNET
                        .trim_start_matches('/')
                        .into(),
                    "The profile opens the web admin to every source (services.admin_from_internet).\n"
                        .to_string(),
                )
            }))
            .collect(),
            epoch: inputs.cached.epoch,
        },
    )?;
    let updates = manifest::Updates {
        origins: hardening::update_origins(profile.base, inputs.jitsi_upgrade_origin),
        sources: tree::apt_sources(root),
        reboot_time: profile.maintenance.as_ref().map(|m| m.reboot_time.clone()),
        timers: tree::enabled_timers(root),
    };
    for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
        if !updates.timers.iter().any(|t| t == timer) {
            bail!("{timer} is not enabled in the image: security updates would never run");
        }
    }
    progress::detail(format!(
        "updates: {} from {}",
        updates.origins.join("; "),
        updates.sources.join("; ")
    ));
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))
        .context("the root file system has no dpkg status file")?;
    Ok((rootfs::installed_packages(&status), updates))
}

/// The raw disk image at `raw`: GPT, the ESP with the boot chain, the root file system from
/// `root` (which is removed afterwards).
fn write_raw_image(
    root: &Path,
    raw: &Path,
    profile: &Profile,
    layout: &DiskLayout,
    epoch: u64,
    key: &SigningKey,
) -> Result<()> {
    progress::step(format!(
        "Disk: {} GPT image, ESP {} (FAT32), root {} (ext4)",
        progress::human_bytes(layout.image_size_bytes),
        progress::human_bytes(layout.esp.len_bytes()),
        progress::human_bytes(layout.root.len_bytes())
    ));
    let image = gpt::create_sparse_image(raw, layout)?;
    gpt::write_partition_table(&image, layout)?;
    drop(image);
    let esp_files = esp::esp_files(root, profile.base.efi_vendor(), &layout.root_fs_uuid)?;
    ext4::make_root_fs(root, raw, layout, epoch)?;
    // The seal describes everything else, so the ESP is written last, with it.
    let seal =
        seal::write_sealed_esp(raw, layout, esp_files, &profile.artifact_name(), key, epoch)?;
    progress::detail(format!(
        "installer seal: {} ranges outside the ESP and {} ESP files, signed",
        seal.ranges.len(),
        seal.esp_files.len()
    ));
    fs::remove_dir_all(root).context("cannot remove the unpacked root tree")
}

fn manifest_disk(layout: &DiskLayout, esp_volume_id: &str) -> manifest::Disk {
    let partition =
        |plan: &layout::PartitionPlan, filesystem: &str, fs_id: String| manifest::Partition {
            number: plan.number,
            name: plan.role.name().to_string(),
            type_guid: plan.role.type_guid(),
            partition_guid: plan.guid,
            first_lba: plan.first_lba,
            last_lba: plan.last_lba,
            size_bytes: plan.len_bytes(),
            filesystem: filesystem.to_string(),
            filesystem_uuid: fs_id,
        };
    manifest::Disk {
        size_bytes: layout.image_size_bytes,
        disk_guid: layout.disk_guid,
        sector_size: layout::SECTOR_SIZE as u32,
        partitions: vec![
            partition(&layout.esp, "vfat", esp_volume_id.to_string()),
            partition(&layout.root, "ext4", layout.root_fs_uuid.to_string()),
        ],
    }
}

/// Under sudo, the artifacts (and a newly created default key) belong to the
/// user who asked for the build, not to root.
fn give_back_to_invoking_user(out: &Path) -> Result<()> {
    let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) else {
        return Ok(());
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        return Ok(());
    };
    std::os::unix::fs::chown(out, Some(uid), Some(gid))?;
    for entry in fs::read_dir(out)? {
        std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The programs the image carries: the first-boot agent, the web admin, and `meetbox` itself,
/// which the box runs as its USB installer (`meetbox install`).
pub struct OnBoxPrograms {
    pub agent: PathBuf,
    pub installer: PathBuf,
    pub admin: PathBuf,
}

/// The on-box programs given on the command line, the rest built from the source tree.
fn on_box_programs(args: &BuildArgs) -> Result<OnBoxPrograms> {
    // (given, package, binary, flag)
    let programs = [
        (
            &args.agent,
            "meetbox-firstboot",
            "meetbox-firstboot",
            "--agent",
        ),
        (&args.installer, "meetbox", "meetbox", "--installer"),
        (&args.admin, "meetbox-firstboot", "meetbox-admin", "--admin"),
    ];
    let missing: Vec<Program> = programs
        .iter()
        .filter(|(given, ..)| given.is_none())
        .map(|(_, package, binary, flag)| Program {
            package,
            binary,
            flag,
        })
        .collect();
    let built = build_static(&missing)?;
    let pick = |given: &Option<PathBuf>, binary: &str| {
        given
            .clone()
            .or_else(|| {
                built
                    .iter()
                    .find(|(b, _)| b == binary)
                    .map(|(_, path)| path.clone())
            })
            .expect("every program not given was built")
    };
    Ok(OnBoxPrograms {
        agent: pick(&args.agent, "meetbox-firstboot"),
        installer: pick(&args.installer, "meetbox"),
        admin: pick(&args.admin, "meetbox-admin"),
    })
}

/// A binary of the source tree, and the flag that gives a built one instead.
struct Program {
    package: &'static str,
    binary: &'static str,
    flag: &'static str,
}

/// Builds `programs` from the source tree, statically linked so the same binaries run on Ubuntu
/// 24.04 and Debian 12 whatever the build host's glibc.
fn build_static(programs: &[Program]) -> Result<Vec<(String, PathBuf)>> {
    if programs.is_empty() {
        return Ok(Vec::new());
    }
    let flags: Vec<&str> = programs.iter().map(|p| p.flag).collect();
    let manifest = source_tree().join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no source tree to build the image's programs from: pass {} (statically linked builds)",
            flags.join(" and ")
        );
    }
    let names: Vec<&str> = programs.iter().map(|p| p.binary).collect();
    let mut packages: Vec<&str> = programs.iter().map(|p| p.package).collect();
    packages.sort_unstable();
    packages.dedup();
    progress::step(format!(
        "Programs for the image: cargo build (static, release) of {}",
        names.join(", ")
    ));
    let target = "x86_64-unknown-linux-gnu";
    let mut command = Command::new("cargo");
    command.args(["build", "--release", "--quiet"]);
    for package in &packages {
        command.args(["-p", package]);
    }
    command
        .args(["--target", target, "--manifest-path"])
        .arg(&manifest)
        // With an explicit --target these flags reach only the programs, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run_inherited()
        .with_context(|| {
            format!(
                "building the image's programs failed (or pass built ones with {})",
                flags.join(" and ")
            )
        })?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| source_tree().join("target"));
    names
        .iter()
        .map(|name| {
            let path = target_dir.join(target).join("release").join(name);
            if !path.is_file() {
                bail!("cargo did not produce {}", path.display());
            }
            Ok((name.to_string(), path.canonicalize()?))
        })
        .collect()
}

/// mmdebstrap needs root: run the rest of the build under sudo, with the paths
/// resolved as the invoking user (programs, key) passed explicitly.
fn reexec_with_sudo(args: &BuildArgs, programs: &OnBoxPrograms) -> Result<()> {
    let mut extra: Vec<std::ffi::OsString> = vec![
        "--agent".into(),
        programs.agent.clone().into(),
        "--installer".into(),
        programs.installer.clone().into(),
        "--admin".into(),
        programs.admin.clone().into(),
    ];
    if args.signing.key.is_none() {
        // Create (or check) the key as the invoking user, in their config
        // directory, so root does not own it; then name it explicitly.
        keys::resolve_secret_key(&args.signing)?;
        extra.push("--key".into());
        extra.push(keys::default_secret_key_path(&keys::user_config_dir()?).into());
    }
    progress::step("Building the root file system needs root: continuing under sudo");
    let mut command = Command::new("sudo");
    // `sudo env VAR=value`: variables pass without needing sudoers' SETENV.
    command.arg("--").arg("env");
    for var in [
        "MEETBOX_KEY_PASSWORD_FILE",
        "MEETBOX_CACHE_DIR",
        "SOURCE_DATE_EPOCH",
    ] {
        if let Some(value) = std::env::var_os(var) {
            let mut pair = std::ffi::OsString::from(format!("{var}="));
            pair.push(value);
            command.arg(pair);
        }
    }
    command
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .args(extra);
    command
        .run_inherited()
        .context("the build under sudo failed")
}
