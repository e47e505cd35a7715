//! nginx with the rendered site and 443 multiplexer in a temporary directory: its paths moved
//! there, optionally its ports, and stopped when dropped.

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

/// Where a test's nginx listens, on 127.0.0.1, instead of the box's ports.
#[derive(Clone, Copy)]
pub struct Ports {
    pub http: u16,
    /// The multiplexer (the box's 443).
    pub https: u16,
    /// Where the multiplexer passes TURN (the box's coturn on 5349).
    pub turn_tls: u16,
}

impl Ports {
    /// Free ports for the web; TURN passed to `turn_tls`.
    pub fn free(turn_tls: u16) -> Ports {
        Ports {
            http: super::free_port(),
            https: super::free_port(),
            turn_tls,
        }
    }
}

/// The nginx site and the 443 multiplexer, with their absolute paths moved into `dir` (and
/// optionally their ports moved).
pub fn setup(dir: &Path, ports: Option<Ports>) -> std::path::PathBuf {
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
    let mut multiplex = render::nginx_multiplex("meet.example.org");
    if let Some(ports) = ports {
        let backend = format!("127.0.0.1:{}", super::free_port());
        let ipv4_only = |conf: &str| {
            conf.lines()
                .filter(|l| !l.contains("listen [::]"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let web_backend = format!("127.0.0.1:{}", layout::WEB_BACKEND_PORT);
        site = ipv4_only(&site)
            .replace("listen 80;", &format!("listen 127.0.0.1:{};", ports.http))
            .replace(&web_backend, &backend)
            .replace(
                &format!("listen {} ssl", layout::ADMIN_PORT),
                &format!("listen 127.0.0.1:{} ssl", super::free_port()),
            );
        multiplex = ipv4_only(&multiplex)
            .replace("listen 443;", &format!("listen 127.0.0.1:{};", ports.https))
            .replace(&web_backend, &backend)
            .replace(
                &format!("127.0.0.1:{}", layout::TURN_TLS_PORT),
                &format!("127.0.0.1:{}", ports.turn_tls),
            );
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(dir.join("multiplex.conf"), multiplex).unwrap();
    let d = dir.display();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\ninclude {d}/multiplex.conf;\nhttp {{\n  include /etc/nginx/mime.types;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  access_log off;\n  gzip on;\n  include {d}/site.conf;\n}}\n"
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
