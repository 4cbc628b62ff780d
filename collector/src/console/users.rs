//! `/console/users`: an admin lists, adds, changes (role, password) and removes the users of
//! `api.users_file`, as `pantau-collector user` does. A change is saved to the file first and
//! then applied in memory, and ends the sessions of the user it concerns. An admin cannot
//! remove or demote themselves, so the console always keeps one.

use std::time::SystemTime;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::info;

use super::{ConsoleError, Page, Visitor, field, render};
use crate::announce::unix_ms;
use crate::api::AppState;
use crate::api::accounts::{Accounts, Role};

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    page: Page,
    flash: Option<&'static str>,
    users: Vec<(String, Role)>,
    has_file: bool,
    roles: [Role; 3],
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /console/users`: admin.
pub async fn page(
    State(app): State<AppState>,
    visitor: Visitor,
    Query(done): Query<Done>,
) -> Result<Response, ConsoleError> {
    visitor.require(&app, Role::Admin, "users")?;
    let users = app
        .credentials
        .accounts
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .accounts
        .iter()
        .map(|account| (account.name.clone(), account.role))
        .collect();
    let page = visitor.page("users");
    let flash = done.done.is_some().then(|| page.t("users.saved"));
    Ok(render(&UsersPage {
        page,
        flash,
        users,
        has_file: app.credentials.users_file().is_some(),
        roles: [Role::Viewer, Role::Operator, Role::Admin],
    }))
}

fn role(name: &str) -> Option<Role> {
    match name {
        "viewer" => Some(Role::Viewer),
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// Applies `change` to a copy of the users, saves it to `api.users_file`, then swaps it in.
async fn change(
    app: &AppState,
    visitor: &Visitor,
    action: &str,
    name: &str,
    change: impl FnOnce(&mut Accounts) -> Result<(), String> + Send + 'static,
) -> Result<Response, ConsoleError> {
    let Some(path) = app.credentials.users_file().cloned() else {
        return Err(visitor.refuse(
            StatusCode::CONFLICT,
            visitor.page("").t("users.no_file").to_owned(),
        ));
    };
    let credentials = app.credentials.clone();
    // Argon2 hashing and the file write: not on the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut current = credentials
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = current.clone();
        change(&mut next)?;
        next.save(&path)?;
        *current = next;
        Ok::<(), String>(())
    })
    .await
    .map_err(|error| visitor.refuse(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    result.map_err(|why| visitor.refuse(StatusCode::BAD_REQUEST, why))?;
    app.console.sessions.remove_user(name);
    let who = &visitor.session.user;
    info!(who = %who, action, user = name, "console: users changed");
    if let Some(announcer) = &app.announcer {
        let _ = announcer
            .store()
            .audit(unix_ms(SystemTime::now()), who, action, name, "");
    }
    Ok(Redirect::to("/console/users?done=saved").into_response())
}

/// `POST /console/users`: admin; adds a user.
pub async fn add(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "users")?;
    let name = field(&fields, "name").unwrap_or_default().trim().to_owned();
    let password = field(&fields, "password").unwrap_or_default().to_owned();
    let role_name = field(&fields, "role").unwrap_or_default();
    let role = role(role_name).ok_or_else(|| {
        visitor.refuse(
            StatusCode::BAD_REQUEST,
            format!("`role`: '{role_name}' is not viewer, operator or admin"),
        )
    })?;
    let user = name.clone();
    change(&app, &visitor, "user_add", &name, move |accounts| {
        accounts.set(&user, Some(role), &password, false)
    })
    .await
}

/// `POST /console/users/{name}`: admin; a new role, and a new password if one is given.
pub async fn edit(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "users")?;
    let role_name = field(&fields, "role").unwrap_or_default();
    let role = role(role_name).ok_or_else(|| {
        visitor.refuse(
            StatusCode::BAD_REQUEST,
            format!("`role`: '{role_name}' is not viewer, operator or admin"),
        )
    })?;
    if name == visitor.session.user && role != Role::Admin {
        return Err(visitor.refuse(
            StatusCode::BAD_REQUEST,
            visitor.page("").t("users.self").to_owned(),
        ));
    }
    let password = field(&fields, "password").unwrap_or_default().to_owned();
    let user = name.clone();
    change(&app, &visitor, "user_edit", &name, move |accounts| {
        let account = accounts
            .accounts
            .iter_mut()
            .find(|account| account.name == user)
            .ok_or_else(|| format!("no user '{user}'"))?;
        account.role = role;
        if password.is_empty() {
            return Ok(());
        }
        accounts.set(&user, Some(role), &password, true)
    })
    .await
}

/// `POST /console/users/{name}/remove`: admin, not themselves.
pub async fn remove(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "users")?;
    if name == visitor.session.user {
        return Err(visitor.refuse(
            StatusCode::BAD_REQUEST,
            visitor.page("").t("users.self").to_owned(),
        ));
    }
    let user = name.clone();
    change(&app, &visitor, "user_remove", &name, move |accounts| {
        accounts.remove(&user)
    })
    .await
}
