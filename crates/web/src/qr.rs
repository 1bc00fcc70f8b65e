//! `GET /api/v1/invite.svg`: the account's invite as a QR code.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use safemeet_api::{Request, Response as Answer};

use crate::Shared;
use crate::login::session;

pub(crate) async fn invite(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = session(&shared, &headers, false) {
        return refused.into_response();
    }
    let text =
        match safemeet_api::dispatch(&shared.engine, &shared.identity, Request::Invite {}).await {
            Ok(Answer::Invite(i)) => i.invite,
            Ok(_) | Err(_) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "no invite now").into_response();
            }
        };
    let Some(svg) = svg(&text) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the invite is too long for a QR code",
        )
            .into_response();
    };
    let mut response = svg.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    response
}

/// `text` as a QR code in SVG: one path of dark squares, a quiet zone of
/// four modules.
pub(crate) fn svg(text: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L).ok()?;
    let width = code.width();
    let size = width + 8;
    let colors = code.to_colors();
    let mut path = String::new();
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + 4, i / width + 4);
            let _ = write!(path, "M{x} {y}h1v1h-1z");
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}
