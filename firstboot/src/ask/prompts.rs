//! The questions on the console, in dialoguer's line mode (a serial console reports a 0x0 window and
//! breaks full-screen prompts). Each answer is validated as it is typed; the password is hidden and
//! typed twice.

use anyhow::{Context, Result};
use dialoguer::Input;

use crate::ask::answers::Answers;
use crate::ask::hidden_input::read_hidden_line;
use crate::ask::validation::{self, Domain, TlsChoice};

/// Asks every question, then shows the summary and asks for confirmation; repeats until confirmed.
pub fn ask() -> Result<Answers> {
    loop {
        let answers = ask_once()?;
        eprintln!("\n{}", summary(&answers));
        let go: String = Input::new()
            .with_prompt("Set up the server with these answers? (yes/no)")
            .validate_with(|input: &String| yes_no(input).map(|_| ()))
            .interact_text()
            .context("cannot read the confirmation")?;
        if yes_no(&go).unwrap_or(false) {
            return Ok(answers);
        }
        eprintln!("\nLet's go through the questions again.\n");
    }
}

fn ask_once() -> Result<Answers> {
    eprintln!(
        "A few questions, then the box sets itself up. Nothing changes before you confirm.\n"
    );
    let domain = ask_domain()?;
    let admin_user: String = Input::new()
        .with_prompt("Admin user name (logs in to start meetings)")
        .default("admin".to_string())
        .validate_with(|input: &String| validation::user(input).map(|_| ()))
        .interact_text()
        .context("cannot read the user name")?;
    let admin_user = validation::user(&admin_user).map_err(anyhow::Error::msg)?;
    let admin_password = ask_password(&admin_user)?;
    let email: String = Input::new()
        .with_prompt("E-mail for Let's Encrypt (optional, press Enter to skip)")
        .allow_empty(true)
        .validate_with(|input: &String| validation::email(input).map(|_| ()))
        .interact_text()
        .context("cannot read the e-mail address")?;
    let email = validation::email(&email).map_err(anyhow::Error::msg)?;
    let tls = ask_tls()?;
    Ok(Answers {
        domain,
        admin_user,
        admin_password,
        email,
        tls,
        acme_directory: None,
        acme_ca_cert: None,
        // Keys are long single lines: they come from the answers file, not the keyboard.
        ssh_authorized_keys: Vec::new(),
        stun_server: None,
    })
}

/// The password, hidden, checked, and typed twice until both agree.
fn ask_password(user: &str) -> Result<String> {
    let prompt = format!(
        "Password for {user} (at least {} characters, or {} words)",
        validation::MIN_PASSWORD_CHARS,
        validation::MIN_PASSPHRASE_WORDS
    );
    loop {
        let password = read_hidden_line(&prompt)?;
        if let Err(problem) = validation::password(&password, user) {
            eprintln!("error: {problem}");
            continue;
        }
        if read_hidden_line("Type the password again")? == password {
            return Ok(password);
        }
        eprintln!("error: The two passwords differ; please type them again.");
    }
}

/// Asks for the public name (also used by `reconfigure`).
pub fn ask_domain() -> Result<Domain> {
    let input: String = Input::new()
        .with_prompt("Domain name of the server (e.g. meet.example.org)")
        .validate_with(|input: &String| validation::domain(input).map(|_| ()))
        .interact_text()
        .context("cannot read the domain name")?;
    validation::domain(&input).map_err(anyhow::Error::msg)
}

/// Asks for the certificate choice (also used by `reconfigure`).
pub fn ask_tls() -> Result<TlsChoice> {
    eprintln!("Certificate:\n  1  Let's Encrypt (the box is reachable from the internet)\n  2  Self-signed (the box is used only on the local network)");
    let choice: String = Input::new()
        .with_prompt("Type 1 or 2")
        .default("1".to_string())
        .validate_with(|input: &String| tls_number(input).map(|_| ()))
        .interact_text()
        .context("cannot read the certificate choice")?;
    tls_number(&choice).map_err(anyhow::Error::msg)
}

/// Line-mode yes/no (dialoguer's Confirm reads single keys in raw mode).
fn yes_no(input: &str) -> Result<bool, String> {
    match input.trim().to_lowercase().as_str() {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        _ => Err("Type yes or no.".into()),
    }
}

fn tls_number(input: &str) -> Result<TlsChoice, String> {
    match input.trim() {
        "1" => Ok(TlsChoice::LetsEncrypt),
        "2" => Ok(TlsChoice::SelfSigned),
        _ => Err("Type 1 for Let's Encrypt or 2 for self-signed.".into()),
    }
}

/// The summary shown before anything changes (no password in it).
pub fn summary(answers: &Answers) -> String {
    format!(
        "Summary:\n  Domain:       {}\n  Admin user:   {}\n  Password:     (hidden)\n  E-mail:       {}\n  Certificate:  {}\n",
        answers.domain,
        answers.admin_user,
        answers.email.as_deref().unwrap_or("(none)"),
        match answers.tls {
            TlsChoice::LetsEncrypt => "Let's Encrypt",
            TlsChoice::SelfSigned => "self-signed",
        }
    )
}
