//! Waits on a client of the client protocol, each bounded.

use herald_client::{Client, ClientError, Push, ReceivedPublication};

use crate::within;

/// The next push that `matches`, skipping others.
pub async fn next_push(client: &Client, what: &str, matches: impl Fn(&Push) -> bool) -> Push {
    within(what, async {
        loop {
            match client.next_push().await {
                Some(push) if matches(&push) => return push,
                Some(_) => continue,
                None => panic!("connection closed while waiting for {what}"),
            }
        }
    })
    .await
}

/// The next publication push, skipping other pushes.
pub async fn next_publication(client: &Client) -> ReceivedPublication {
    next_push(client, "a publication push", |push| {
        push.publication.is_some()
    })
    .await
    .publication
    .expect("a publication push")
}

/// Waits for the server to close the connection and returns the close code.
pub async fn close_code(client: &Client) -> u16 {
    within("server close", client.closed())
        .await
        .map(|info| info.code)
        .expect("a close frame")
}

/// The server error code of a failed request.
pub fn error_code(result: Result<impl std::fmt::Debug, ClientError>) -> u32 {
    match result {
        Err(error) => error
            .server_code()
            .unwrap_or_else(|| panic!("expected a server error, got {error}")),
        Ok(value) => panic!("expected a server error, got {value:?}"),
    }
}
