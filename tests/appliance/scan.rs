//! The CIS benchmark (OpenSCAP, Level 1 and Level 2 Server) and Lynis inside the booted box after
//! setup, the way an auditor measures a running server. The scanner comes in as a kit
//! (tests/support/cis/kit.rs) over SSH, runs from a tmpfs of its own and is gone before the privacy
//! search of the disk. The reports (ARF, HTML, Lynis's report and log) land in
//! `target/tmp/hardening-report/booted/`; every failing rule must be a documented exception that
//! holds on a running box.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use crate::audit::{ScanLink, SSH_OPTIONS};
use crate::support::cis::{self, kit, Kind, Scan, PROFILES};
use crate::unattended::OwnerKey;

/// `ssh root@box command`, its standard input from `input` and its output into `output`.
fn ssh_file(
    link: &ScanLink,
    owner: &OwnerKey,
    command: &str,
    input: Option<&Path>,
    output: Option<&Path>,
) {
    let mut ssh = link.command("ssh");
    ssh.args(SSH_OPTIONS)
        .arg("-i")
        .arg(&owner.private)
        .arg(format!("root@{}", link.guest()))
        .arg(command)
        .stdin(match input {
            Some(path) => Stdio::from(fs::File::open(path).unwrap()),
            None => Stdio::null(),
        })
        .stdout(match output {
            Some(path) => Stdio::from(fs::File::create(path).unwrap()),
            None => Stdio::null(),
        });
    let status = ssh.status().unwrap();
    assert!(status.success(), "{command} on the guest failed");
}

/// Scans the box, keeps the reports, and fails on a failing rule no exception covers.
pub(crate) fn scan_the_running_box(
    link: &ScanLink,
    owner: &OwnerKey,
    shell: &dyn Fn(&str) -> String,
) {
    let report = cis::report_dir(Kind::Booted);
    let datastream = cis::ssg_content();
    let tarball = kit::scanner_kit();
    let allowed = cis::exceptions();
    let dir = kit::ON_THE_BOX;
    let started = Instant::now();
    ssh_file(
        link,
        owner,
        &format!(
            "mkdir -m 700 {dir} && mount -t tmpfs -o mode=0700,size=512m meetbox-scan {dir} && \
             mkdir {dir}/kit && tar -xf - -C {dir}/kit"
        ),
        Some(&tarball),
        None,
    );
    ssh_file(
        link,
        owner,
        &format!("cat > {dir}/ds.xml"),
        Some(&datastream),
        None,
    );
    let oscap = kit::oscap_command();
    let version = shell(&format!("{oscap} --version | head -1"));
    eprintln!(
        "booted scan: {} carried in ({:.0} s)",
        version.trim(),
        started.elapsed().as_secs_f64()
    );

    let mut summary = String::new();
    let mut unexcepted = Vec::new();
    for (title, profile) in PROFILES {
        let stem = format!("booted-{}", cis::profile_stem(profile));
        let started = Instant::now();
        // Exit code 2 means "some rule failed"; anything else but 0 is an error.
        let code = shell(&format!(
            "cd {dir} && {oscap} xccdf eval --skip-validation --profile {profile} --results-arf {stem}.arf.xml \
             ds.xml > {stem}.txt 2> {stem}.err; echo $?"
        ));
        let errors = shell(&format!("cat {dir}/{stem}.err"));
        assert!(
            matches!(code.trim(), "0" | "2"),
            "oscap {profile} on the box exited with {}: {errors}",
            code.trim()
        );
        assert!(
            !errors.contains("dpkginfo_init has failed"),
            "oscap's package probe cannot read the box's packages: {errors}"
        );
        let scan = Scan::parse(&shell(&format!("cat {dir}/{stem}.txt")));
        assert!(
            scan.decided() > 100,
            "oscap decided only {} rules of {profile} on the box: {errors}",
            scan.decided()
        );
        let arf = report.join(format!("{stem}.arf.xml"));
        ssh_file(
            link,
            owner,
            &format!("cat {dir}/{stem}.arf.xml"),
            None,
            Some(&arf),
        );
        html_report(&arf, &report.join(format!("{stem}.html")));
        let line = scan.summary(title, "image (booted)");
        eprintln!(
            "{} ({:.0} s)",
            line.trim_end(),
            started.elapsed().as_secs_f64()
        );
        summary.push_str(&line);
        unexcepted.extend(cis::unexcepted(title, &scan, Kind::Booted, &allowed));
    }

    let started = Instant::now();
    let code = shell(&format!(
        "cd {dir}/kit/lynis && ./lynis audit system --quick --no-colors --no-log \
         --report-file {dir}/lynis-report.dat > {dir}/lynis.txt 2>&1; echo $?"
    ));
    ssh_file(
        link,
        owner,
        &format!("cat {dir}/lynis.txt"),
        None,
        Some(&report.join("booted-lynis.txt")),
    );
    assert_eq!(
        code.trim(),
        "0",
        "Lynis failed on the box: see {}",
        report.join("booted-lynis.txt").display()
    );
    let lynis_report = shell(&format!("cat {dir}/lynis-report.dat"));
    fs::write(report.join("booted-lynis-report.dat"), &lynis_report).unwrap();
    let lynis = cis::lynis_index(&lynis_report);
    let line = format!("Lynis hardening index: image (booted) {lynis}\n");
    eprintln!(
        "{} ({:.0} s)",
        line.trim_end(),
        started.elapsed().as_secs_f64()
    );
    summary.push_str(&line);
    fs::write(report.join("summary.txt"), &summary).unwrap();

    // Nothing of the scanner stays, in memory or on disk.
    shell(&format!("umount {dir} && rmdir {dir}"));
    eprintln!("booted reports: {}", report.display());
    assert!(
        unexcepted.is_empty(),
        "CIS rules failing on the running box without a documented exception \
         (fix them or add them with a reason to tests/hardening/cis-exceptions.toml):\n{}",
        unexcepted.join("\n")
    );
}

/// The HTML report from the box's results, rendered on the host (XSLT under emulation is slow).
fn html_report(arf: &Path, html: &Path) {
    let output = std::process::Command::new("oscap")
        .args(["xccdf", "generate", "report", "--output"])
        .arg(html)
        .arg(arf)
        .output()
        .expect("oscap runs");
    assert!(
        output.status.success(),
        "oscap could not render {}: {}",
        arf.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
