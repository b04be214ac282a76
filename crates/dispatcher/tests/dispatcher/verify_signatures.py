"""Checks Waybill's webhook signatures with the Standard Webhooks reference library.

Reads a JSON list of {"secret", "body", "headers"} on stdin and prints a JSON list of booleans:
whether `standardwebhooks.Webhook(secret).verify(body, headers)` accepted each request.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def key_of(secret):
    # A `whsec_` secret carries its key in base64 (the library decodes it); any other secret's
    # key is its UTF-8 bytes, which the library takes as bytes.
    return secret if secret.startswith("whsec_") else secret.encode()


results = []
for check in json.load(sys.stdin):
    try:
        Webhook(key_of(check["secret"])).verify(check["body"], check["headers"])
        results.append(True)
    except WebhookVerificationError:
        results.append(False)
print(json.dumps(results))
