//! The unprivileged web process: behind nginx on loopback, it checks where each request comes from,
//! who is logged in and the CSRF token, and asks the root helper for everything else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::admin::actions::{Action, Reply};
use crate::admin::helper;
use crate::admin::pages;
use crate::admin::sessions::{self, Notice, Session, Sessions};
use crate::layout;
use crate::network;
use crate::secrets;

const COOKIE: &str = "meetbox_admin";
/// Set on every answer: nothing from elsewhere, no framing, no script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
struct App {
    helper: PathBuf,
    sessions: Arc<Mutex<Sessions>>,
    /// The image opens the admin to every source (layout::ADMIN_FROM_INTERNET).
    from_anywhere: bool,
}

/// Serves the admin on `listen` until the process is stopped.
pub fn serve(listen: SocketAddr, helper: PathBuf) -> Result<()> {
    let app = App {
        helper,
        sessions: Arc::default(),
        from_anywhere: std::path::Path::new(layout::ADMIN_FROM_INTERNET).exists(),
    };
    if app.from_anywhere {
        eprintln!("meetbox-admin: open to every source, as the image's profile chose");
    }
    let router = Router::new()
        .route("/", get(status_page))
        .route("/style.css", get(style))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/hosts", get(hosts_page))
        .route("/hosts/add", post(add_host))
        .route("/hosts/remove", post(remove_host))
        .route("/hosts/reset", post(reset_host))
        .route("/password", get(password_page).post(change_password))
        .route("/domain", get(domain_page).post(change_domain))
        .route("/backup", get(backup_page).post(download_backup))
        .route("/maintenance", get(maintenance_page))
        .route("/maintenance/{action}", post(maintenance))
        .with_state(app);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the web admin's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("meetbox-admin: serving on {listen}");
        axum::serve(listener, router)
            .await
            .context("the web admin stopped")
    })
}

/// A request that passed the address check, with its session if logged in.
struct Visit {
    address: IpAddr,
    token: Option<String>,
}

impl App {
    /// nginx passes the client's address in `X-Real-IP`; only the local network gets in.
    fn visit(&self, headers: &HeaderMap) -> Result<Visit, Box<Response>> {
        let address = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<IpAddr>().ok());
        let Some(address) = address else {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "The admin is reached through the box's web server only.",
            )));
        };
        if !self.from_anywhere && !network::is_local_network(address) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "The admin answers only computers on the box's local network.",
            )));
        }
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                pair.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_string)
            });
        Ok(Visit { address, token })
    }

    fn session(&self, visit: &Visit) -> Option<(String, Session)> {
        let token = visit.token.clone()?;
        let session = self.sessions.lock().unwrap().get(&token, Instant::now())?;
        Some((token, session))
    }

    /// The logged-in session, or a redirect to the login page.
    fn logged_in(&self, headers: &HeaderMap) -> Result<(String, Session), Box<Response>> {
        let visit = self.visit(headers)?;
        self.session(&visit)
            .ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
    }

    /// A logged-in session whose form carries its CSRF token.
    fn change(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<String, Box<Response>> {
        let (token, session) = self.logged_in(headers)?;
        let submitted = form.get("csrf").map(String::as_str).unwrap_or("");
        if !sessions::csrf_matches(&session, submitted) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "This form is out of date or came from another site; reload the page and try again.",
            )));
        }
        Ok(token)
    }

    async fn ask(&self, action: Action) -> Reply {
        let socket = self.helper.clone();
        let name = action.name();
        tokio::task::spawn_blocking(move || helper::ask(&socket, &action))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|reply| reply)
            .unwrap_or_else(|error| {
                eprintln!("meetbox-admin: {name}: {error:#}");
                Reply::Refused(format!("The box could not do this: {error:#}"))
            })
    }

    /// Runs a change, keeps its outcome for the next page, and sends the browser there.
    async fn change_and_show(&self, token: &str, action: Action, then: &str) -> Response {
        let notice = match self.ask(action).await {
            Reply::Done(text) => Notice::Done(text),
            Reply::Refused(text) => Notice::Refused(text),
            _ => Notice::Refused("The box gave an unexpected answer.".into()),
        };
        self.sessions.lock().unwrap().notify(token, notice);
        Redirect::to(then).into_response()
    }

    fn notice(&self, token: &str) -> Option<Notice> {
        self.sessions.lock().unwrap().take_notice(token)
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn refuse(status: StatusCode, why: &str) -> Response {
    html(status, pages::refusal(why))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], pages::STYLE).into_response()
}

async fn login_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.visit(&headers) {
        Err(response) => *response,
        Ok(visit) if app.session(&visit).is_some() => Redirect::to("/").into_response(),
        Ok(_) => html(StatusCode::OK, pages::login(None)),
    }
}

async fn login(State(app): State<App>, headers: HeaderMap, Form(form): Form<Fields>) -> Response {
    let visit = match app.visit(&headers) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let now = Instant::now();
    if let Err(refusal) = app.sessions.lock().unwrap().may_try(visit.address, now) {
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some(&refusal.message())),
        );
    }
    let password = form.get("password").cloned().unwrap_or_default();
    match app.ask(Action::CheckLogin { password }).await {
        Reply::LoginChecked(true) => {
            let (Ok(token), Ok(csrf)) = (
                secrets::random_alphanumeric(43),
                secrets::random_alphanumeric(43),
            ) else {
                return html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::login(Some("The box has no randomness; try again.")),
                );
            };
            let token = app
                .sessions
                .lock()
                .unwrap()
                .start(visit.address, token, csrf, now);
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                sessions::ABSOLUTE_TIMEOUT.as_secs()
            );
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie).expect("the token is alphanumeric"),
            );
            response
        }
        Reply::LoginChecked(false) => {
            app.sessions.lock().unwrap().failed(visit.address, now);
            html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That is not the admin password.")),
            )
        }
        Reply::Refused(why) => html(StatusCode::SERVICE_UNAVAILABLE, pages::login(Some(&why))),
        _ => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::login(Some("The box gave an unexpected answer.")),
        ),
    }
}

async fn logout(State(app): State<App>, headers: HeaderMap, Form(form): Form<Fields>) -> Response {
    match app.change(&headers, &form) {
        Err(response) => *response,
        Ok(token) => {
            app.sessions.lock().unwrap().end(&token);
            let mut response = Redirect::to("/login").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "meetbox_admin=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                ),
            );
            response
        }
    }
}

type Fields = HashMap<String, String>;

/// A page of the logged-in admin that needs nothing of the helper.
async fn plain_page(
    app: &App,
    headers: &HeaderMap,
    render: fn(&str, Option<&Notice>) -> String,
) -> Response {
    match app.logged_in(headers) {
        Err(response) => *response,
        Ok((token, session)) => {
            let notice = app.notice(&token);
            html(StatusCode::OK, render(&session.csrf, notice.as_ref()))
        }
    }
}

/// A page drawn from the helper's answer to `action`; None from `render` means the answer was not
/// the expected kind.
async fn helper_page(
    app: &App,
    headers: &HeaderMap,
    action: Action,
    render: impl FnOnce(&str, Option<&Notice>, &Reply) -> Option<String>,
) -> Response {
    let (token, session) = match app.logged_in(headers) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let notice = app.notice(&token);
    let reply = app.ask(action).await;
    match render(&session.csrf, notice.as_ref(), &reply) {
        Some(page) => html(StatusCode::OK, page),
        None => unexpected(reply),
    }
}

/// A change: the session and its token checked, the action built from the form, its outcome shown
/// once on `then`.
async fn post_change(
    app: &App,
    headers: &HeaderMap,
    form: &Fields,
    action: impl FnOnce(&Fields) -> Action,
    then: &str,
) -> Response {
    match app.change(headers, form) {
        Err(response) => *response,
        Ok(token) => app.change_and_show(&token, action(form), then).await,
    }
}

fn unexpected(reply: Reply) -> Response {
    let why = match reply {
        Reply::Refused(why) => why,
        _ => "The box gave an unexpected answer.".into(),
    };
    html(StatusCode::SERVICE_UNAVAILABLE, pages::refusal(&why))
}

fn field(form: &Fields, name: &str) -> String {
    form.get(name).cloned().unwrap_or_default()
}

async fn status_page(State(app): State<App>, headers: HeaderMap) -> Response {
    helper_page(
        &app,
        &headers,
        Action::Status,
        |csrf, notice, reply| match reply {
            Reply::Status(status) => Some(pages::status(csrf, notice, status)),
            _ => None,
        },
    )
    .await
}

async fn domain_page(State(app): State<App>, headers: HeaderMap) -> Response {
    helper_page(
        &app,
        &headers,
        Action::Status,
        |csrf, notice, reply| match reply {
            Reply::Status(status) => Some(pages::domain(csrf, notice, status)),
            _ => None,
        },
    )
    .await
}

async fn hosts_page(State(app): State<App>, headers: HeaderMap) -> Response {
    helper_page(
        &app,
        &headers,
        Action::ListHosts,
        |csrf, notice, reply| match reply {
            Reply::Hosts(hosts) => Some(pages::hosts(csrf, notice, hosts)),
            _ => None,
        },
    )
    .await
}

async fn password_page(State(app): State<App>, headers: HeaderMap) -> Response {
    plain_page(&app, &headers, pages::password).await
}

async fn backup_page(State(app): State<App>, headers: HeaderMap) -> Response {
    plain_page(&app, &headers, pages::backup).await
}

async fn maintenance_page(State(app): State<App>, headers: HeaderMap) -> Response {
    plain_page(&app, &headers, pages::maintenance).await
}

async fn add_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let action = |f: &Fields| Action::AddHost {
        user: field(f, "user"),
        password: field(f, "password"),
    };
    post_change(&app, &headers, &form, action, "/hosts").await
}

async fn remove_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let action = |f: &Fields| Action::RemoveHost {
        user: field(f, "user"),
    };
    post_change(&app, &headers, &form, action, "/hosts").await
}

async fn reset_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let action = |f: &Fields| Action::ResetHostPassword {
        user: field(f, "user"),
        password: field(f, "password"),
    };
    post_change(&app, &headers, &form, action, "/hosts").await
}

async fn change_domain(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let action = |f: &Fields| Action::ChangeDomain {
        domain: field(f, "domain"),
        tls: field(f, "tls"),
    };
    post_change(&app, &headers, &form, action, "/domain").await
}

async fn maintenance(
    State(app): State<App>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let action = match name.as_str() {
        "renew" => Action::RenewCertificate,
        "updates" => Action::ApplyUpdates,
        "reboot" => Action::Reboot,
        "power-off" => Action::PowerOff,
        "factory-reset" => Action::FactoryReset {
            password: field(&form, "password"),
            confirm: field(&form, "confirm"),
        },
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                pages::refusal("There is no such action."),
            )
        }
    };
    post_change(&app, &headers, &form, |_| action, "/maintenance").await
}

/// The admin password: both new ones must agree; on success every session ends, this one too.
async fn change_password(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let token = match app.change(&headers, &form) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    let refused = |text: String| {
        app.sessions
            .lock()
            .unwrap()
            .notify(&token, Notice::Refused(text));
        Redirect::to("/password").into_response()
    };
    if field(&form, "new") != field(&form, "again") {
        return refused("The two new passwords differ; nothing was changed.".into());
    }
    let action = Action::SetAdminPassword {
        current: field(&form, "current"),
        new: field(&form, "new"),
    };
    match app.ask(action).await {
        Reply::Done(text) => {
            app.sessions.lock().unwrap().end_all();
            html(StatusCode::OK, pages::login(Some(&text)))
        }
        Reply::Refused(text) => refused(text),
        other => unexpected(other),
    }
}

/// The backup as a download; a refusal goes back to the form with the reason.
async fn download_backup(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let token = match app.change(&headers, &form) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    let refused = |text: String| {
        app.sessions
            .lock()
            .unwrap()
            .notify(&token, Notice::Refused(text));
        Redirect::to("/backup").into_response()
    };
    if field(&form, "passphrase") != field(&form, "again") {
        return refused("The two passphrases differ.".into());
    }
    let action = Action::Backup {
        passphrase: field(&form, "passphrase"),
    };
    match app.ask(action).await {
        Reply::Backup(name, data) => {
            use base64::Engine;
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                return refused("The box gave a damaged backup; try again.".into());
            };
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Reply::Refused(text) => refused(text),
        other => unexpected(other),
    }
}
