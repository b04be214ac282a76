//! Secrets, passwords and tokens are stored encrypted: the rows hold no plaintext, and only the
//! configured key opens them.

use diesel::{QueryableByName, sql_types::Binary};
use diesel_async::RunQueryDsl;
use serde_json::json;
use waybill_store::{
    Cipher,
    crypto::{credential_context, secret_context},
};

use crate::helpers::TestApp;

#[derive(QueryableByName)]
struct Blob {
    #[diesel(sql_type = Binary)]
    b: Vec<u8>,
}

/// The one bytea value `sql` selects as `b`.
async fn blob(conn: &mut diesel_async::AsyncPgConnection, sql: String) -> Vec<u8> {
    let row: Blob = diesel::sql_query(sql).get_result(conn).await.unwrap();
    row.b
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn credentials_are_ciphertext_at_rest() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let (password, token, secret) = (
        "plaintext-password-42",
        "plaintext-token-42",
        "plaintext-secret-42",
    );
    let basic = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/a", "events": ["order.shipped"], "secret": secret,
            "auth": {"type": "basic", "username": "wms", "password": password}}),
        )
        .await;
    let tok = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/b", "events": ["order.shipped"],
            "auth": {"type": "token", "header": "X-Api-Key", "token": token}}),
        )
        .await;
    let (basic_id, tok_id) = (basic["id"].as_str().unwrap(), tok["id"].as_str().unwrap());
    let mut conn = app.sql().await;

    // Not a single column of any table holds the plaintext.
    let dump: Vec<Blob> = diesel::sql_query(
        "SELECT convert_to(w::text, 'UTF8') AS b FROM webhooks w \
         UNION ALL SELECT convert_to(s::text, 'UTF8') FROM webhook_secrets s \
         UNION ALL SELECT convert_to(c::text, 'UTF8') FROM subscription_changes c",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert!(dump.len() >= 6);
    for row in &dump {
        for plain in [password, token, secret] {
            assert!(!contains(&row.b, plain), "plaintext `{plain}` stored");
        }
    }

    // The configured key opens them; another key does not.
    let cipher = Cipher::new(&app.settings.encryption_key().unwrap()).unwrap();
    let cred = |id: &str| format!("SELECT auth_credential AS b FROM webhooks WHERE id = '{id}'");
    let open = |b: &[u8], id| cipher.decrypt_string(b, &credential_context(id)).unwrap();
    let stored = blob(&mut conn, cred(basic_id)).await;
    let id: waybill_domain::WebhookId = basic_id.parse().unwrap();
    assert_eq!(open(&stored, id), password);
    assert!(
        Cipher::new(&[9u8; 32])
            .unwrap()
            .decrypt(&stored, &credential_context(id))
            .is_err()
    );
    let stored = blob(&mut conn, cred(tok_id)).await;
    let tid: waybill_domain::WebhookId = tok_id.parse().unwrap();
    assert_eq!(open(&stored, tid), token);
    // A ciphertext moved to another row does not open there.
    assert!(cipher.decrypt(&stored, &credential_context(id)).is_err());
    let s = blob(
        &mut conn,
        format!("SELECT secret AS b FROM webhook_secrets WHERE webhook_id = '{basic_id}'"),
    )
    .await;
    assert_eq!(
        cipher.decrypt_string(&s, &secret_context(id)).unwrap(),
        secret
    );

    // Credentials survive an unrelated update intact.
    app.patch_webhook(&t, basic_id, json!({"name": "renamed"}))
        .await
        .assert(200);
    let stored = blob(&mut conn, cred(basic_id)).await;
    assert_eq!(open(&stored, id), password);
}
