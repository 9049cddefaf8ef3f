"""Container health probe: ``python deploy/healthcheck.py [/livez|/healthz]``; exit 0 on a 200.

Asks gunicorn on this container directly, with the first ``ALLOWED_HOSTS`` name as Host (Django
refuses other names) and ``X-Forwarded-Proto: https`` (what the proxy sends). Standard library only.
"""

import http.client
import os
import sys


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/livez"
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost").split(",")]
    host = next((h for h in hosts if h and "*" not in h and not h.startswith(".")), "localhost")
    port = int(os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host, "X-Forwarded-Proto": "https"})
        status = conn.getresponse().status
    except OSError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"{path}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
