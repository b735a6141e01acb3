-- wrk: POST one NOTE to /message as the bench's peer ("load", secret "bench-secret").
wrk.method = "POST"
wrk.body = '{"type":"NOTE","payload":{"title":"a note for the p99 run","n":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Shared-Secret"] = "bench-secret"
