//! `TestApp`: the api on a testkit stack, and what api tests add to it.

#![allow(dead_code)]

use serde_json::{Value, json};
use waybill_api::Application;
use waybill_runtime::Settings;
use waybill_testkit::{Response, Stack};
pub use waybill_testkit::{broker_url, eventually};

waybill_testkit::suite_stack! {
    /// A running api with its own database and broker prefix.
    pub struct TestApp;
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts an app with its own database, after `tweak` adjusted the settings.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp(
            Stack::builder()
                .settings(tweak)
                .with_api(Application::build)
                .start()
                .await,
        )
    }

    /// An app holding one webhook of acme's: the app, acme's token and the webhook's id.
    pub async fn with_webhook() -> (TestApp, String, String) {
        let app = Self::spawn().await;
        let t = app.acme();
        let id = app
            .create_webhook_id(&t, webhook("https://example.com/a"))
            .await;
        (app, t, id)
    }

    /// Starts another app on this app's database (a restart, or a second replica).
    pub async fn sibling(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut stack = self.0.sibling(tweak);
        stack.serve(Application::build).await;
        TestApp(stack)
    }

    /// `PATCH /v1/webhooks/{id}` as `token`'s caller.
    pub async fn patch_webhook(&self, token: &str, id: &str, body: Value) -> Response {
        self.patch(&format!("/v1/webhooks/{id}"), token, body).await
    }

    /// `PATCH /v1/events/{name}` as `token`'s caller.
    pub async fn patch_event(&self, token: &str, name: &str, body: Value) -> Response {
        self.patch(&format!("/v1/events/{name}"), token, body).await
    }

    /// `POST /v1/webhooks/{id}/secret/rotate` as `token`'s caller.
    pub async fn rotate(&self, token: &str, id: &str, body: Value) -> Response {
        self.post(&format!("/v1/webhooks/{id}/secret/rotate"), token, body)
            .await
    }

    /// Signs `claims` with the app's own key, for tokens `mint` would not make.
    pub fn sign(&self, claims: Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.settings.jwt_secret().as_bytes()),
        )
        .unwrap()
    }

    /// Creates a webhook for `token`'s tenant and returns its JSON.
    pub async fn create_webhook(&self, token: &str, body: Value) -> Value {
        let r = self.post("/v1/webhooks", token, body).await;
        r.assert(201);
        r.body["data"].clone()
    }

    /// Creates a webhook and returns its id.
    pub async fn create_webhook_id(&self, token: &str, body: Value) -> String {
        self.create_webhook(token, body).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A minimal valid create body.
pub fn webhook(url: &str) -> Value {
    json!({"url": url, "events": ["order.shipped"]})
}
