//! Diesel table definitions, written to match `migrations/`.

diesel::table! {
    event_types (name) {
        name -> Text,
        group_name -> Text,
        action -> Text,
        description -> Text,
        description_overridden -> Bool,
        schema -> Jsonb,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Uuid,
        tenant -> Text,
        name -> Text,
        description -> Text,
        url -> Text,
        method -> Text,
        events -> Array<Text>,
        events_key -> Text,
        client_ids -> Array<Text>,
        headers -> Jsonb,
        auth_type -> Text,
        auth_username -> Nullable<Text>,
        auth_header -> Nullable<Text>,
        auth_credential -> Nullable<Binary>,
        active -> Bool,
        disabled_reason -> Nullable<Text>,
        revision -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_secrets (id) {
        id -> Int8,
        webhook_id -> Uuid,
        secret -> Binary,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    subscription_changes (seq) {
        seq -> Int8,
        webhook_id -> Uuid,
        tenant -> Text,
        revision -> Int8,
        kind -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(webhook_secrets -> webhooks (webhook_id));
diesel::allow_tables_to_appear_in_same_query!(
    event_types,
    webhooks,
    webhook_secrets,
    subscription_changes
);
