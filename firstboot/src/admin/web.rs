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
use crate::network;
use crate::secrets;

const COOKIE: &str = "meetbox_admin";
/// Set on every answer: nothing from elsewhere, no framing, no script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
struct App {
    helper: PathBuf,
    sessions: Arc<Mutex<Sessions>>,
}

/// Serves the admin on `listen` until the process is stopped.
pub fn serve(listen: SocketAddr, helper: PathBuf) -> Result<()> {
    let app = App {
        helper,
        sessions: Arc::default(),
    };
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
        if !network::is_local_network(address) {
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

async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
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

async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
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

async fn status_page(State(app): State<App>, headers: HeaderMap) -> Response {
    let (token, session) = match app.logged_in(&headers) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let notice = app.notice(&token);
    match app.ask(Action::Status).await {
        Reply::Status(status) => html(
            StatusCode::OK,
            pages::status(&session.csrf, notice.as_ref(), &status),
        ),
        other => unexpected(other),
    }
}

async fn hosts_page(State(app): State<App>, headers: HeaderMap) -> Response {
    let (token, session) = match app.logged_in(&headers) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let notice = app.notice(&token);
    match app.ask(Action::ListHosts).await {
        Reply::Hosts(hosts) => html(
            StatusCode::OK,
            pages::hosts(&session.csrf, notice.as_ref(), &hosts),
        ),
        other => unexpected(other),
    }
}

fn unexpected(reply: Reply) -> Response {
    let why = match reply {
        Reply::Refused(why) => why,
        _ => "The box gave an unexpected answer.".into(),
    };
    html(StatusCode::SERVICE_UNAVAILABLE, pages::refusal(&why))
}

fn field(form: &HashMap<String, String>, name: &str) -> String {
    form.get(name).cloned().unwrap_or_default()
}

async fn add_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match app.change(&headers, &form) {
        Err(response) => *response,
        Ok(token) => {
            let action = Action::AddHost {
                user: field(&form, "user"),
                password: field(&form, "password"),
            };
            app.change_and_show(&token, action, "/hosts").await
        }
    }
}

async fn remove_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match app.change(&headers, &form) {
        Err(response) => *response,
        Ok(token) => {
            let action = Action::RemoveHost {
                user: field(&form, "user"),
            };
            app.change_and_show(&token, action, "/hosts").await
        }
    }
}

async fn reset_host(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match app.change(&headers, &form) {
        Err(response) => *response,
        Ok(token) => {
            let action = Action::ResetHostPassword {
                user: field(&form, "user"),
                password: field(&form, "password"),
            };
            app.change_and_show(&token, action, "/hosts").await
        }
    }
}

async fn password_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.logged_in(&headers) {
        Err(response) => *response,
        Ok((token, session)) => {
            let notice = app.notice(&token);
            html(
                StatusCode::OK,
                pages::password(&session.csrf, notice.as_ref()),
            )
        }
    }
}

async fn change_password(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = match app.change(&headers, &form) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    if field(&form, "new") != field(&form, "again") {
        app.sessions.lock().unwrap().notify(
            &token,
            Notice::Refused("The two new passwords differ; nothing was changed.".into()),
        );
        return Redirect::to("/password").into_response();
    }
    let action = Action::SetAdminPassword {
        current: field(&form, "current"),
        new: field(&form, "new"),
    };
    match app.ask(action).await {
        // Every session ends with the old password, this one too.
        Reply::Done(text) => {
            app.sessions.lock().unwrap().end_all();
            html(StatusCode::OK, pages::login(Some(&text)))
        }
        Reply::Refused(text) => {
            app.sessions
                .lock()
                .unwrap()
                .notify(&token, Notice::Refused(text));
            Redirect::to("/password").into_response()
        }
        other => unexpected(other),
    }
}

async fn maintenance_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.logged_in(&headers) {
        Err(response) => *response,
        Ok((token, session)) => {
            let notice = app.notice(&token);
            html(
                StatusCode::OK,
                pages::maintenance(&session.csrf, notice.as_ref()),
            )
        }
    }
}

async fn maintenance(
    State(app): State<App>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = match app.change(&headers, &form) {
        Ok(token) => token,
        Err(response) => return *response,
    };
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
    app.change_and_show(&token, action, "/maintenance").await
}

async fn domain_page(State(app): State<App>, headers: HeaderMap) -> Response {
    let (token, session) = match app.logged_in(&headers) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let notice = app.notice(&token);
    match app.ask(Action::Status).await {
        Reply::Status(status) => html(
            StatusCode::OK,
            pages::domain(&session.csrf, notice.as_ref(), &status),
        ),
        other => unexpected(other),
    }
}

async fn change_domain(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match app.change(&headers, &form) {
        Err(response) => *response,
        Ok(token) => {
            let action = Action::ChangeDomain {
                domain: field(&form, "domain"),
                tls: field(&form, "tls"),
            };
            app.change_and_show(&token, action, "/domain").await
        }
    }
}

async fn backup_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.logged_in(&headers) {
        Err(response) => *response,
        Ok((token, session)) => {
            let notice = app.notice(&token);
            html(
                StatusCode::OK,
                pages::backup(&session.csrf, notice.as_ref()),
            )
        }
    }
}

/// The backup as a download; a refusal goes back to the form with the reason.
async fn download_backup(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = match app.change(&headers, &form) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    let refuse_with = |text: String| {
        app.sessions
            .lock()
            .unwrap()
            .notify(&token, Notice::Refused(text));
        Redirect::to("/backup").into_response()
    };
    if field(&form, "passphrase") != field(&form, "again") {
        return refuse_with("The two passphrases differ.".into());
    }
    match app
        .ask(Action::Backup {
            passphrase: field(&form, "passphrase"),
        })
        .await
    {
        Reply::Backup(name, data) => {
            use base64::Engine;
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                return refuse_with("The box gave a damaged backup; try again.".into());
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Reply::Refused(text) => refuse_with(text),
        other => unexpected(other),
    }
}
