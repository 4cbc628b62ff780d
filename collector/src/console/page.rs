//! What every page shares: the layout's `Page` (language, user, role, CSRF token), the
//! refusal page, and rendering with the console's security headers.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::error;

use super::i18n::{self, Lang};
use crate::api::accounts::Role;

/// What the layout needs on every page.
pub struct Page {
    pub lang: Lang,
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// The navigation entry to highlight.
    pub active: &'static str,
}

impl Page {
    pub fn t(&self, key: &str) -> &'static str {
        i18n::t(self.lang, key)
    }

    pub fn lang_code(&self) -> &'static str {
        self.lang.code()
    }

    /// The language the switch link offers.
    pub fn other_lang(&self) -> &'static str {
        match self.lang {
            Lang::Id => "en",
            Lang::En => "id",
        }
    }

    pub fn role_label(&self) -> &'static str {
        self.role_name(&self.role)
    }

    /// A role's label.
    pub fn role_name(&self, role: &Role) -> &'static str {
        self.t(match role {
            Role::Viewer => "role.viewer",
            Role::Operator => "role.operator",
            Role::Admin => "role.admin",
        })
    }

    pub fn can_send(&self) -> bool {
        self.role >= Role::Operator
    }

    pub fn is_admin(&self) -> bool {
        self.role >= Role::Admin
    }

    pub fn logged_in(&self) -> bool {
        !self.user.is_empty()
    }

    /// A weekday's label (`mon` .. `sun`).
    pub fn day(&self, day: &str) -> &'static str {
        match day {
            "mon" => self.t("day.mon"),
            "tue" => self.t("day.tue"),
            "wed" => self.t("day.wed"),
            "thu" => self.t("day.thu"),
            "fri" => self.t("day.fri"),
            "sat" => self.t("day.sat"),
            _ => self.t("day.sun"),
        }
    }

    /// A priority's label.
    /// A target's status (`finished`, `stopped`, ...) in the page's language; an unknown one
    /// as it is.
    pub fn status<'a>(&self, status: &'a str) -> &'a str {
        match i18n::status_key(status) {
            Some(key) => self.t(key),
            None => status,
        }
    }

    pub fn priority(&self, name: &str) -> &'static str {
        match name {
            "emergency" => self.t("prio.emergency"),
            "alert" => self.t("prio.alert"),
            "scheduled" => self.t("prio.scheduled"),
            _ => self.t("prio.operator"),
        }
    }
}

/// A page or message shown instead of what was asked.
#[derive(Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    pub page: Page,
    pub message: String,
}

/// Why a console request did not get its page.
pub enum ConsoleError {
    /// No live session: to the login page.
    Login,
    Refused {
        status: StatusCode,
        page: Box<Page>,
        message: String,
    },
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::Login => Redirect::to("/console/login").into_response(),
            ConsoleError::Refused {
                status,
                page,
                message,
            } => {
                let mut response = render(&MessagePage {
                    page: *page,
                    message,
                });
                *response.status_mut() = status;
                response
            }
        }
    }
}

/// Renders a page with the console's headers: no caching, no framing, scripts only from here.
pub fn render<T: Template>(template: &T) -> Response {
    match template.render() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
                ),
                (header::X_FRAME_OPTIONS, "DENY"),
            ],
            body,
        )
            .into_response(),
        Err(cause) => {
            error!(%cause, "console: a template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
