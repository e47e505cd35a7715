//! nginx with the rendered site in a temporary directory: its paths moved there, optionally its
//! ports, and stopped when dropped.

use std::path::Path;
use std::process::Child;

use meetbox_firstboot::acme::tls;
use meetbox_firstboot::layout;
use meetbox_firstboot::render;

/// Writes a self-signed certificate and key into `dir`; returns their paths.
pub fn certificate_in(dir: &Path) -> (String, String) {
    let certified = tls::self_signed(&["meet.example.org"]).unwrap();
    let cert = dir.join("fullchain.pem");
    let key = dir.join("privkey.pem");
    std::fs::write(&cert, certified.chain_pem).unwrap();
    std::fs::write(&key, certified.key_pem).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

/// A server stopped with SIGTERM when dropped (nginx's master then stops its workers too).
pub struct Stopped(pub Child);
impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling a child we started, by its id.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The nginx site, with its absolute paths moved into `dir` (and optionally its ports moved).
pub fn setup(dir: &Path, ports: Option<(u16, u16)>) -> std::path::PathBuf {
    let (cert, key) = certificate_in(dir);
    let web = dir.join("web");
    std::fs::create_dir_all(web.join("static")).unwrap();
    std::fs::write(web.join("index.html"), "<html>jitsi</html>\n".repeat(100)).unwrap();
    std::fs::create_dir_all(web.join("libs")).unwrap();
    std::fs::write(
        web.join("libs/app.bundle.min.js"),
        "var meetbox = 1;\n".repeat(200),
    )
    .unwrap();
    let acme = dir.join("acme");
    std::fs::create_dir_all(acme.join(".well-known/acme-challenge")).unwrap();
    std::fs::write(acme.join(".well-known/acme-challenge/tok-1"), "tok-1.thumb").unwrap();
    let config_js = dir.join("config.js");
    std::fs::write(&config_js, "var config = {};\n").unwrap();
    let mut site = super::with_site(true, render::nginx_site)
        .replace(layout::TLS_CERT, &cert)
        .replace(layout::TLS_KEY, &key)
        .replace(
            &layout::jitsi_config_js("meet.example.org"),
            &config_js.display().to_string(),
        )
        .replace(layout::ACME_WEBROOT, &acme.display().to_string())
        .replace(layout::JITSI_WEB_ROOT, &web.display().to_string())
        .replace(
            "/var/log/nginx/error.log",
            &dir.join("site-error.log").display().to_string(),
        );
    if let Some((http, https)) = ports {
        site = site
            .lines()
            .filter(|l| !l.contains("listen [::]"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
            .replace("listen 443 ssl", &format!("listen 127.0.0.1:{https} ssl"))
            .replace(
                &format!("listen {} ssl", layout::ADMIN_PORT),
                &format!("listen 127.0.0.1:{} ssl", super::free_port()),
            );
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let d = dir.display();
    let conf = format!(
        "user root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  include /etc/nginx/mime.types;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  access_log off;\n  gzip on;\n  include {d}/site.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Runs `nginx` (a command that starts nginx, perhaps inside a namespace) in the foreground with
/// `conf` from `setup`, stopped when dropped.
pub fn start(mut nginx: std::process::Command, dir: &Path, conf: &Path) -> Stopped {
    Stopped(
        nginx
            .args(["-g", "daemon off;", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}
