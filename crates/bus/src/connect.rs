//! Opening a connection to the broker: `broker.url` names one node, or several separated by
//! commas (a cluster), tried in the order given until one accepts.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// How long one node may take to accept a connection before the next is tried: a node whose
/// host is gone (no refusal, only silence) must not hold every connection for the kernel's
/// connect timeout.
const PER_NODE: Duration = Duration::from_secs(2);

/// The URLs in `urls`, in order: split at commas, blanks around each trimmed, empty ones left out.
pub fn broker_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// Connects to the first node of `urls` that accepts within [`PER_NODE`]; when none does, the
/// last node's error. A comma inside a URL (in a password, say) is written `%2C`.
pub async fn connect(urls: &str, props: ConnectionProperties) -> Result<Connection, lapin::Error> {
    let mut last = None;
    for url in broker_urls(urls) {
        let attempt = tokio::time::timeout(PER_NODE, Connection::connect(url, props.clone())).await;
        match attempt.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", PER_NODE.as_secs()),
            )
            .into())
        }) {
            Ok(connection) => return Ok(connection),
            Err(e) => {
                tracing::debug!(error = %e, "broker node refused the connection; trying the next");
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) => Err(e),
        // Nothing but commas and blanks: lapin's own answer to a URL it cannot read.
        None => Connection::connect(urls, props).await,
    }
}

#[cfg(test)]
mod tests {
    use super::broker_urls;

    #[test]
    fn one_url_or_a_list_in_order() {
        let one: Vec<_> = broker_urls("amqp://a:5672/%2f").collect();
        assert_eq!(one, ["amqp://a:5672/%2f"]);
        let many: Vec<_> = broker_urls(" amqp://a/%2f, amqp://b/%2f,,amqp://c/%2f ").collect();
        assert_eq!(many, ["amqp://a/%2f", "amqp://b/%2f", "amqp://c/%2f"]);
        assert_eq!(broker_urls(" , ").count(), 0);
    }
}
