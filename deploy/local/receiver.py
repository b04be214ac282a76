#!/usr/bin/env python3
"""A webhook receiver for trying Waybill locally: prints every delivery and answers 204.

    python3 deploy/local/receiver.py [port]            # default port 9000
    WEBHOOK_SECRET=whsec_... python3 deploy/local/receiver.py

With WEBHOOK_SECRET set (the subscription's secret, from GET /v1/webhooks/{id}/secret) and the
`standardwebhooks` package installed, each signature is verified and requests that fail are
answered 401.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("WEBHOOK_SECRET")
verifier = None
if SECRET:
    from standardwebhooks.webhooks import Webhook

    verifier = Webhook(SECRET if SECRET.startswith("whsec_") else SECRET.encode())


class Handler(BaseHTTPRequestHandler):
    def _receive(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        verdict = "not verified"
        status = 204
        if verifier is not None:
            try:
                verifier.verify(body.decode(), dict(self.headers.items()))
                verdict = "signature ok"
            except Exception as e:  # any failure means: do not trust it
                verdict, status = f"signature REFUSED ({e})", 401
        print(
            f"{self.command} {self.path}  {self.headers.get('waybill-event-type')}  "
            f"webhook-id={self.headers.get('webhook-id')}  "
            f"attempt={self.headers.get('waybill-attempt')}  {verdict}"
        )
        try:
            print("  " + json.dumps(json.loads(body))[:400])
        except ValueError:
            print(f"  {body[:400]!r}")
        sys.stdout.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    do_POST = _receive
    do_PUT = _receive

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
