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
        rate_limit -> Nullable<Int4>,
        revision -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        filter -> Nullable<Jsonb>,
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

diesel::table! {
    events (tenant, id) {
        tenant -> Text,
        id -> Text,
        event_type -> Text,
        client_id -> Nullable<Text>,
        occurred_at -> Timestamptz,
        received_at -> Timestamptz,
        data -> Jsonb,
        created_at -> Timestamptz,
        fanned_out_at -> Nullable<Timestamptz>,
        claimed_by -> Nullable<Text>,
        claimed_until -> Nullable<Timestamptz>,
        claims -> Int4,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Uuid,
        tenant -> Text,
        webhook_id -> Uuid,
        event_id -> Text,
        event_type -> Text,
        status -> Text,
        attempts -> Int4,
        last_status_code -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    delivery_attempts (delivery_id, number) {
        delivery_id -> Uuid,
        number -> Int4,
        started_at -> Timestamptz,
        duration_ms -> Int4,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
    }
}

diesel::table! {
    endpoint_health (webhook_id) {
        webhook_id -> Uuid,
        failures -> Int4,
        failing_since -> Timestamptz,
        open_until -> Nullable<Timestamptz>,
        cooldown_ms -> Int4,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    endpoint_throttle (webhook_id) {
        webhook_id -> Uuid,
        next_slot -> Timestamptz,
    }
}

diesel::table! {
    invalid_events (id) {
        id -> Uuid,
        tenant -> Nullable<Text>,
        routing_key -> Text,
        message_id -> Nullable<Text>,
        reason -> Text,
        received_at -> Timestamptz,
        body -> Binary,
        body_truncated -> Bool,
        body_bytes -> Int4,
    }
}

diesel::joinable!(webhook_secrets -> webhooks (webhook_id));
diesel::allow_tables_to_appear_in_same_query!(
    event_types,
    webhooks,
    webhook_secrets,
    subscription_changes,
    events,
    deliveries,
    delivery_attempts,
    endpoint_health,
    endpoint_throttle,
    invalid_events
);
