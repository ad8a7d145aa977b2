//! ApiVersions: the APIs and versions this broker speaks. It depends on
//! nothing but the protocol crate, so it answers the same on every broker
//! in every state, which is what lets a client ask it first.

use rill_client::protocol::messages::{ApiVersionRange, ApiVersionsResponse};
use rill_client::protocol::{ApiKey, Response};

/// Every API this broker serves with the range of versions spoken.
pub(super) fn api_versions() -> Response {
    Response::ApiVersions(ApiVersionsResponse {
        apis: ApiKey::ALL
            .iter()
            .map(|&k| ApiVersionRange {
                api_key: k as u16,
                min_version: k.versions().0,
                max_version: k.versions().1,
            })
            .collect(),
    })
}
