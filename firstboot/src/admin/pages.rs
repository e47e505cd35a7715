//! The admin's pages as HTML: pure functions of what they show. Plain forms and links, no script,
//! no third-party font or style; every change is a POST that carries the session's CSRF token.

use crate::admin::actions::RESET_WORD;
use crate::admin::jobs::Job;
use crate::admin::sessions::Notice;
use crate::admin::status::Status;
use crate::ask::validation::TlsChoice;
use crate::clock::format_time;

/// The one style sheet, served by the admin itself (`/style.css`).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.8em 1.5em;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}\
header a{color:#cfe0ff;text-decoration:none}header strong{margin-right:1em}\
main{max-width:52em;margin:1.5em auto;padding:0 1em}\
section{background:#fff;border-radius:6px;padding:1em 1.5em;margin-bottom:1em;box-shadow:0 1px 2px #0002}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:0}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.35em .5em;border-bottom:1px solid #e3e5ea}\
label{display:block;margin:.6em 0 .2em}input[type=text],input[type=password]{width:100%;max-width:24em;padding:.4em;box-sizing:border-box}\
button{margin-top:.8em;padding:.45em 1em;border:0;border-radius:4px;background:#2457c5;color:#fff;cursor:pointer}\
button.danger{background:#b3261e}form.inline{display:inline}form.inline button{margin:0 .3em}\
.notice{padding:.7em 1em;border-radius:4px;margin-bottom:1em}.done{background:#e3f4e6}.refused{background:#fbe4e2}\
.active{color:#1b7a32}.failed{color:#b3261e}fieldset{border:0;padding:0;margin-top:.8em}fieldset label{margin:.3em 0}";

/// The login form; `problem` is why the last attempt failed.
pub fn login(problem: Option<&str>) -> String {
    let problem = problem
        .map(|text| format!("<p class=\"notice refused\">{}</p>", escape(text)))
        .unwrap_or_default();
    document(
        "Log in",
        "",
        &format!(
            "<section><h1>Meetbox admin</h1>{problem}\
             <form method=\"post\" action=\"/login\">\
             <label for=\"password\">Admin password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required autofocus>\
             <button type=\"submit\">Log in</button></form></section>"
        ),
    )
}

/// A page that only says why a request was refused, with the way back.
pub fn refusal(why: &str) -> String {
    document(
        "Refused",
        "",
        &format!(
            "<section><h1>Meetbox admin</h1><p class=\"notice refused\">{}</p><p><a href=\"/\">Back to the admin</a></p></section>",
            escape(why)
        ),
    )
}

/// The status page.
pub fn status(csrf: &str, notice: Option<&Notice>, status: &Status) -> String {
    let services: String = status
        .services
        .iter()
        .map(|(unit, state)| {
            let class = match state.as_str() {
                "active" => "active",
                "failed" => "failed",
                _ => "",
            };
            format!(
                "<tr><td>{}</td><td class=\"{class}\">{}</td></tr>",
                escape(unit),
                escape(state)
            )
        })
        .collect();
    let lines = |lines: &[String]| -> String {
        lines
            .iter()
            .map(|line| format!("<li>{}</li>", escape(line)))
            .collect()
    };
    let address = |ip: &Option<String>| ip.as_deref().map_or("not known".into(), escape);
    let body = format!(
        "<h1>Status</h1>\
         <section><h2>Meetings</h2><p><a href=\"{url}\">{url}</a></p></section>\
         <section><h2>Services</h2><table>{services}</table></section>\
         <section><h2>Certificate</h2><ul>{certificate}</ul></section>\
         <section><h2>Network</h2><table>\
         <tr><td>Address on the local network</td><td>{lan}</td></tr>\
         <tr><td>Public address (the domain's DNS record)</td><td>{public}</td></tr></table>\
         <ul>{network}</ul></section>\
         <section><h2>Updates</h2><ul>{updates}</ul></section>\
         <section><h2>File integrity</h2><ul>{integrity}</ul></section>\
         <section><h2>Disk and memory</h2><table>\
         <tr><td>Disk</td><td>{disk_used} used of {disk_total}</td></tr>\
         <tr><td>Memory</td><td>{memory_free} free of {memory_total}</td></tr></table></section>",
        url = escape(&status.meeting_url),
        certificate = lines(&status.certificate),
        lan = address(&status.lan_address),
        public = address(&status.public_address),
        network = status
            .network
            .iter()
            .map(|(fine, line)| format!(
                "<li class=\"{}\">{}</li>",
                if *fine { "active" } else { "failed" },
                escape(line)
            ))
            .collect::<String>(),
        updates = lines(&status.updates),
        integrity = lines(&status.integrity),
        disk_used = size(status.disk.0),
        disk_total = size(status.disk.1),
        memory_free = size(status.memory.0),
        memory_total = size(status.memory.1),
    );
    page("Status", csrf, notice, &body)
}

/// The meeting hosts: who may start meetings.
pub fn hosts(csrf: &str, notice: Option<&Notice>, hosts: &[String]) -> String {
    let rows: String = if hosts.is_empty() {
        "<tr><td>No hosts yet: only the admin account starts meetings.</td></tr>".into()
    } else {
        hosts
            .iter()
            .map(|user| {
                let user = escape(user);
                format!(
                    "<tr><td>{user}</td><td>\
                     <form class=\"inline\" method=\"post\" action=\"/hosts/reset\">{token}\
                     <input type=\"hidden\" name=\"user\" value=\"{user}\">\
                     <input type=\"password\" name=\"password\" aria-label=\"New password for {user}\" placeholder=\"new password\" autocomplete=\"new-password\" required>\
                     <button type=\"submit\">Reset password</button></form>\
                     <form class=\"inline\" method=\"post\" action=\"/hosts/remove\">{token}\
                     <input type=\"hidden\" name=\"user\" value=\"{user}\">\
                     <button class=\"danger\" type=\"submit\">Remove</button></form></td></tr>",
                    token = csrf_field(csrf)
                )
            })
            .collect()
    };
    let body = format!(
        "<h1>Meeting hosts</h1>\
         <section><p>Hosts log in to start a meeting; guests join without an account once a host is in.</p>\
         <table>{rows}</table></section>\
         <section><h2>Add a host</h2><form method=\"post\" action=\"/hosts/add\">{token}\
         <label for=\"user\">User name</label><input type=\"text\" id=\"user\" name=\"user\" required>\
         <label for=\"password\">Password (12 characters or more, or four words)</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" required>\
         <button type=\"submit\">Add host</button></form></section>",
        token = csrf_field(csrf)
    );
    page("Meeting hosts", csrf, notice, &body)
}

/// The admin password form.
pub fn password(csrf: &str, notice: Option<&Notice>) -> String {
    let body = format!(
        "<h1>Admin password</h1><section><form method=\"post\" action=\"/password\">{token}\
         <label for=\"current\">Current password</label>\
         <input type=\"password\" id=\"current\" name=\"current\" autocomplete=\"current-password\" required>\
         <label for=\"new\">New password (12 characters or more, or four words)</label>\
         <input type=\"password\" id=\"new\" name=\"new\" autocomplete=\"new-password\" required>\
         <label for=\"again\">New password again</label>\
         <input type=\"password\" id=\"again\" name=\"again\" autocomplete=\"new-password\" required>\
         <button type=\"submit\">Change the password</button></form></section>",
        token = csrf_field(csrf)
    );
    page("Admin password", csrf, notice, &body)
}

/// The domain and the certificate choice, changed as one step; the last change's outcome (the page
/// reloads itself while one runs).
pub fn domain(csrf: &str, notice: Option<&Notice>, status: &Status) -> String {
    let running = status
        .last_change
        .as_ref()
        .is_some_and(|job| job.finished.is_none());
    let checked = |choice: TlsChoice| {
        if status.tls == Some(choice) {
            " checked"
        } else {
            ""
        }
    };
    let body = format!(
        "<h1>Domain and certificate</h1>{last}\
         <section><p>The box serves <strong>{current}</strong>. A new name needs its DNS record pointing at \
         this line (and ports 80 and 443 forwarded) before Let's Encrypt can certify it. If any part \
         fails, the box goes back to the old name by itself.</p>\
         <form method=\"post\" action=\"/domain\">{token}\
         <label for=\"domain\">Domain name</label><input type=\"text\" id=\"domain\" name=\"domain\" value=\"{current}\" required>\
         <fieldset><legend>Certificate</legend>\
         <label><input type=\"radio\" name=\"tls\" value=\"letsencrypt\"{le}> Let's Encrypt (browsers trust it)</label>\
         <label><input type=\"radio\" name=\"tls\" value=\"self-signed\"{ss}> Self-signed (local network only; browsers warn)</label>\
         </fieldset><button type=\"submit\"{disabled}>Change</button></form></section>",
        last = status.last_change.as_ref().map(job).unwrap_or_default(),
        current = escape(&status.domain),
        token = csrf_field(csrf),
        le = checked(TlsChoice::LetsEncrypt),
        ss = checked(TlsChoice::SelfSigned),
        disabled = if running { " disabled" } else { "" },
    );
    page_with_head(
        "Domain",
        csrf,
        notice,
        &body,
        if running {
            "<meta http-equiv=\"refresh\" content=\"5\">"
        } else {
            ""
        },
    )
}

/// The record of a long-running change.
fn job(job: &Job) -> String {
    let (class, state) = match (job.finished, job.ok) {
        (None, _) => ("notice", "running since".to_string()),
        (Some(at), true) => ("notice done", format!("done at {}", format_time(at))),
        (Some(at), false) => ("notice refused", format!("FAILED at {}", format_time(at))),
    };
    let since = if job.finished.is_none() {
        format!(" {}", format_time(job.started))
    } else {
        String::new()
    };
    format!(
        "<section class=\"{class}\"><strong>{}</strong>: {state}{since}<br>{}</section>",
        escape(&job.what),
        escape(&job.message)
    )
}

/// The backup download.
pub fn backup(csrf: &str, notice: Option<&Notice>) -> String {
    let body = format!(
        "<h1>Backup</h1><section><p>The backup holds the settings, the box's own secrets, every \
         meeting account and the certificate, encrypted with the passphrase you choose here. Keep \
         the file and the passphrase apart. To restore, copy the file to the boot partition of a \
         freshly written Meetbox disk or stick before its first start (docs/admin.md).</p>\
         <form method=\"post\" action=\"/backup\">{token}\
         <label for=\"passphrase\">Passphrase (12 characters or more, or four words)</label>\
         <input type=\"password\" id=\"passphrase\" name=\"passphrase\" autocomplete=\"new-password\" required>\
         <label for=\"again\">Passphrase again</label>\
         <input type=\"password\" id=\"again\" name=\"again\" autocomplete=\"new-password\" required>\
         <button type=\"submit\">Download the backup</button></form></section>",
        token = csrf_field(csrf)
    );
    page("Backup", csrf, notice, &body)
}

/// Renew, update, restart, power off.
pub fn maintenance(csrf: &str, notice: Option<&Notice>) -> String {
    let button = |action: &str, label: &str, class: &str, text: &str| {
        format!(
            "<section><h2>{label}</h2><p>{text}</p><form method=\"post\" action=\"/maintenance/{action}\">{token}\
             <button class=\"{class}\" type=\"submit\">{label}</button></form></section>",
            token = csrf_field(csrf)
        )
    };
    let body = [
        "<h1>Maintenance</h1>".to_string(),
        button(
            "renew",
            "Renew the certificate now",
            "",
            "The box renews its certificate by itself; this asks for a new one now.",
        ),
        button(
            "updates",
            "Apply updates now",
            "",
            "The box installs security updates every night; this starts them now.",
        ),
        button("reboot", "Restart", "danger", "Meetings in progress end."),
        button(
            "power-off",
            "Power off",
            "danger",
            "Meetings in progress end; the box stays off until someone presses its power button.",
        ),
        format!(
            "<section><h2>Factory reset</h2><p>Erases everything of this box: settings, accounts, \
             certificates and their keys. It restarts and asks the first-boot questions again. \
             Download a backup first if you may want them back.</p>\
             <form method=\"post\" action=\"/maintenance/factory-reset\">{token}\
             <label for=\"reset-password\">Admin password</label>\
             <input type=\"password\" id=\"reset-password\" name=\"password\" autocomplete=\"current-password\" required>\
             <label for=\"reset-confirm\">Type {RESET_WORD} to confirm</label>\
             <input type=\"text\" id=\"reset-confirm\" name=\"confirm\" autocomplete=\"off\" required>\
             <button class=\"danger\" type=\"submit\">Erase everything and restart</button></form></section>",
            token = csrf_field(csrf)
        ),
    ]
    .concat();
    page("Maintenance", csrf, notice, &body)
}

/// A page of the logged-in admin: the menu, the notice, the body.
fn page(title: &str, csrf: &str, notice: Option<&Notice>, body: &str) -> String {
    page_with_head(title, csrf, notice, body, "")
}

fn page_with_head(
    title: &str,
    csrf: &str,
    notice: Option<&Notice>,
    body: &str,
    head: &str,
) -> String {
    let notice = match notice {
        Some(Notice::Done(text)) => format!("<p class=\"notice done\">{}</p>", escape(text)),
        Some(Notice::Refused(text)) => {
            format!("<p class=\"notice refused\">{}</p>", escape(text))
        }
        None => String::new(),
    };
    let menu = format!(
        "<header><strong>Meetbox admin</strong><a href=\"/\">Status</a><a href=\"/hosts\">Meeting hosts</a>\
         <a href=\"/domain\">Domain</a><a href=\"/password\">Admin password</a><a href=\"/backup\">Backup</a><a href=\"/maintenance\">Maintenance</a>\
         <form class=\"inline\" method=\"post\" action=\"/logout\">{}<button type=\"submit\">Log out</button></form></header>",
        csrf_field(csrf)
    );
    document_with_head(title, &menu, &format!("{notice}{body}"), head)
}

fn document(title: &str, header: &str, main: &str) -> String {
    document_with_head(title, header, main, "")
}

fn document_with_head(title: &str, header: &str, main: &str, head: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{head}\
         <title>{} · Meetbox admin</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body>{header}<main>{main}</main></body></html>\n",
        escape(title)
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// Text for HTML content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes in the unit an owner reads (GiB, MiB).
fn size(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_that_changes_something_carries_the_token() {
        let hosts = hosts("tok123", None, &["ann".into(), "bob".into()]);
        for page in [
            hosts.as_str(),
            &password("tok123", None),
            &maintenance("tok123", None),
            &backup("tok123", None),
        ] {
            let forms = page.matches("<form").count();
            let tokens = page.matches("name=\"csrf\" value=\"tok123\"").count();
            assert!(forms > 1);
            assert_eq!(forms, tokens, "{page}");
        }
    }

    #[test]
    fn names_and_messages_are_escaped() {
        let page = hosts(
            "t",
            Some(&Notice::Refused("<script>".into())),
            &["a\"b".into()],
        );
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a&quot;b"));
        assert!(!page.contains("<script>"));
        assert!(login(Some("<b>")).contains("&lt;b&gt;"));
    }

    #[test]
    fn no_page_loads_anything_from_elsewhere_or_runs_a_script() {
        for page in [login(None), maintenance("t", None), password("t", None)] {
            assert!(!page.contains("http://") && !page.contains("https://"));
            assert!(!page.contains("<script"));
        }
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(size(5 << 20), "5 MiB");
    }
}
