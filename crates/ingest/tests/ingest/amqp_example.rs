//! The Python example of `proto-schemas/examples/` publishes an event that is queued for
//! dispatch and matches the envelope contract and its type's schema.

use std::process::Command;

use crate::helpers::TestIngest;

#[tokio::test]
async fn the_python_example_publishes_a_valid_event_directly_over_amqp() {
    let app = TestIngest::spawn().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto-schemas/examples/publish_event.py"
    );
    let out =
        Command::new(std::env::var("WAYBILL_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .env("AMQP_URL", &app.settings.broker.url)
            .env("WAYBILL_PREFIX", &app.settings.broker.prefix)
            .env("WAYBILL_TENANT", "acme")
            .output()
            .expect("python3 runs (make test installs pika)");
    assert!(
        out.status.success(),
        "example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let m = app.next_message().await;
    assert_eq!(m.routing_key.as_str(), "stock.updated");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.to_string()),
        Some(id)
    );
    assert_eq!(m.properties.delivery_mode(), &Some(2));
    let envelope: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
    let load = |rel: &str| -> serde_json::Value {
        let path = format!("{}/../../proto-schemas/{rel}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    for (schema, instance) in [
        (load("broker/event.schema.json"), &envelope),
        (load("events/stock.updated.json"), &envelope["data"]),
    ] {
        let v = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?} in {envelope}");
    }
}
