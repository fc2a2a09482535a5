#!/usr/bin/env python3
"""Quickstart replier, run by the `enrich` Exec sink for every order event.

Reads the event (structured JSON) on standard input and prints a reply event on standard
output; Triggerfish feeds the reply back into the broker, where other triggers see it.
"""
import json
import sys
import uuid

event = json.load(sys.stdin)
order = event.get("data") if isinstance(event.get("data"), dict) else {}
amount = int(event.get("amount", order.get("amount", 0)) or 0)
reply = {
    "specversion": "1.0",
    "id": str(uuid.uuid4()),
    "source": "/quickstart/enrich",
    "type": "com.example.order.enriched",
    "subject": event["id"],
    "datacontenttype": "application/json",
    "data": {**order, "amount": amount, "tier": "gold" if amount >= 1000 else "standard"},
}
json.dump(reply, sys.stdout)
