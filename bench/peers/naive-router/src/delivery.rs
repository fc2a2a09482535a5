//! Delivering one event to a subscriber, in binary mode, with reqwest.
//!
//! The SDK's `reqwest` feature does the same through `RequestBuilderExt::event`, but it also
//! turns on reqwest's rustls stack, which plain-HTTP delivery does not need. This is the
//! SDK's own serializer (`cloudevents::binding::reqwest::RequestSerializer`, 0.9), on the
//! SDK's public `BinarySerializer` trait.

use cloudevents::Event;
use cloudevents::binding::http::header_prefix;
use cloudevents::event::SpecVersion;
use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, MessageAttributeValue, Result as MessageResult,
};
use reqwest::RequestBuilder;

/// One attempt; failures are logged, not retried.
pub async fn deliver(client: &reqwest::Client, uri: &str, event: Event) {
    let request =
        match BinaryDeserializer::deserialize_binary(event, RequestSerializer(client.post(uri))) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode an event");
                return;
            }
        };
    match request.send().await {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => tracing::warn!(status = %resp.status(), uri, "delivery refused"),
        Err(e) => tracing::warn!(error = %ErrorChain(&e), uri, "delivery failed"),
    }
}

/// Writes an event's attributes as `ce-` headers and its data as the body.
struct RequestSerializer(RequestBuilder);

impl BinarySerializer<RequestBuilder> for RequestSerializer {
    fn set_spec_version(self, spec_ver: SpecVersion) -> MessageResult<Self> {
        Ok(RequestSerializer(
            self.0.header("ce-specversion", spec_ver.to_string()),
        ))
    }

    fn set_attribute(self, name: &str, value: MessageAttributeValue) -> MessageResult<Self> {
        Ok(RequestSerializer(
            self.0.header(header_prefix(name), value.to_string()),
        ))
    }

    fn set_extension(self, name: &str, value: MessageAttributeValue) -> MessageResult<Self> {
        Ok(RequestSerializer(
            self.0.header(header_prefix(name), value.to_string()),
        ))
    }

    fn end_with_data(self, bytes: Vec<u8>) -> MessageResult<RequestBuilder> {
        Ok(self.0.body(bytes))
    }

    fn end(self) -> MessageResult<RequestBuilder> {
        Ok(self.0)
    }
}

/// Displays an error with its sources: reqwest's own message alone says only "error sending
/// request".
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
